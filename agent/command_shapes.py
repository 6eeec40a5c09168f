"""The shape of each command's arguments and result, declared once (the
frames carrying them, ``cmd`` and ``reply``, are in :mod:`agent.messages`).

A reply does not name its command: the observer knows which ``id`` it sent.
``docs/protocol.schema.json`` has every shape (``python -m agent.schema``);
the tests check the arguments and the result of every command, sent to a
real agent, against it. The agent still checks arguments itself and answers
``bad_args``; ``docs/protocol.md`` section 7 is the prose.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict

from .messages import PidText, ProcessRecord, Schema, StackEntry, Value

__all__ = [
    "COMMAND_ARGS",
    "COMMAND_RESULTS",
    "ChildArgs",
    "ChildRow",
    "DumpResult",
    "EncodedValue",
    "FlightRecorderArgs",
    "FlightRecorderResult",
    "FlightRecorderSettings",
    "InfoResult",
    "InspectArgs",
    "InspectResult",
    "KillArgs",
    "KillResult",
    "MailboxArgs",
    "MailboxPeek",
    "MailboxResult",
    "NoArgs",
    "PidArgs",
    "PingResult",
    "ProcessesArgs",
    "ProcessesResult",
    "RestartChildResult",
    "ResumeResult",
    "SendArgs",
    "SendResult",
    "SnapshotResult",
    "SuspendResult",
    "Target",
    "TerminateChildResult",
    "TraceArgs",
    "TraceResult",
]


# -- arguments ---------------------------------------------------------------------------------------

Target = Annotated[
    str,
    Schema(name="Target", minLength=1, maxLength=200, description="a pid (<0.42.0>) or a registered name"),
]


def _int(lo: int, hi: int) -> Schema:
    return Schema(minimum=lo, maximum=hi)


class NoArgs(TypedDict):
    """No arguments: ``{}``."""


class ProcessesArgs(TypedDict):
    limit: NotRequired[Annotated[int, _int(0, 10_000)]]
    offset: NotRequired[Annotated[int, _int(0, 1 << 40)]]


class PidArgs(TypedDict):
    pid: Target


class InspectArgs(TypedDict):
    pid: Target
    mailbox_limit: NotRequired[Annotated[int, _int(0, 100)]]


class MailboxArgs(TypedDict):
    pid: Target
    limit: NotRequired[Annotated[int, _int(0, 200)]]


class KillArgs(TypedDict):
    pid: Target
    reason: NotRequired[Annotated[str, Schema(minLength=1, maxLength=200)]]


class CancelArgs(TypedDict):
    """asyncio nodes: ``pid`` a task; ``reason`` its cancel message."""

    pid: Target
    reason: NotRequired[Annotated[str, Schema(maxLength=200)]]


class SendArgs(TypedDict):
    """``message``: any JSON (arrays arrive as tuples)."""

    to: Target
    message: Any


class ChildArgs(TypedDict):
    """``child_id``: the child's id, its wire form, or a simple_one_for_one child's pid."""

    supervisor: Target
    child_id: Annotated[str, Schema(minLength=1)]


class TraceArgs(TypedDict):
    """With ``id``: a trace session with limits (agent/_trace.py; ``on: false``
    and the ``id`` stop it). Without: the operators' untimed per-process switch."""

    pids: NotRequired[Annotated[list[Target], Schema(minItems=1, maxItems=100)]]
    on: NotRequired[bool]
    id: NotRequired[Annotated[str, Schema(minLength=1, maxLength=64)]]
    dir: NotRequired[Literal["in", "out", "both"]]
    max_msgs: NotRequired[Annotated[int, _int(1, 100_000)]]
    max_rate: NotRequired[Annotated[int, _int(1, 10_000)]]
    duration: NotRequired[Annotated[float, Schema(minimum=0.05, maximum=3600)]]


class FlightRecorderArgs(TypedDict):
    pid: Target
    on: NotRequired[bool]
    size: NotRequired[Annotated[int, _int(1, 1000)]]
    subtree: NotRequired[bool]


COMMAND_ARGS: Final[dict[str, type]] = {
    "ping": NoArgs,
    "snapshot": NoArgs,
    "info": PidArgs,
    "inspect": InspectArgs,
    "mailbox": MailboxArgs,
    "processes": ProcessesArgs,
    "kill": KillArgs,
    "suspend": PidArgs,
    "resume": PidArgs,
    "send": SendArgs,
    "cancel": CancelArgs,
    "restart_child": ChildArgs,
    "terminate_child": ChildArgs,
    "trace": TraceArgs,
    "flight_recorder": FlightRecorderArgs,
    "dump": NoArgs,
}
"""Each command and the shape of its ``args`` (the schema's ``CommandMsg`` is one
of these pairings; the agent checks arguments itself and answers ``bad_args``)."""


# -- results (the ``result`` of a ``ReplyOk``) ---------------------------------------------------------


class PingResult(TypedDict):
    pong: Literal[True]
    seq: int


class SnapshotResult(TypedDict):
    """A fresh snapshot follows on the stream."""

    resync: Literal[True]


class ProcessesResult(TypedDict):
    count: int
    offset: int
    procs: list[ProcessRecord]


class InfoResult(ProcessRecord):
    """A process record, with its coroutine chain, memory estimate and monitors."""

    stack: list[StackEntry]
    memory: int
    monitored_by: list[PidText]


class EncodedValue(TypedDict):
    value: Value
    truncated: bool
    masked: int


class MailboxPeek(TypedDict):
    messages: list[Value]
    truncated: bool
    masked: int


class FlightRecorderSettings(TypedDict):
    size: int
    subtree: bool


class ChildRow(TypedDict):
    id: str | None
    pid: PidText | None
    type: str
    restarts: int


class InspectResult(InfoResult):
    """``info`` and the state (null for a plain worker), a mailbox peek, the
    flight recorder's settings (null: off) and a supervisor's children."""

    state: EncodedValue | None
    mailbox_peek: MailboxPeek
    flight_recorder: FlightRecorderSettings | None
    children: NotRequired[list[ChildRow]]


class MailboxResult(TypedDict):
    messages: list[Value]
    total: int
    truncated: bool
    masked: int


class KillResult(TypedDict):
    pid: PidText
    reason: str


class SuspendResult(TypedDict):
    suspended: Literal[True]


class ResumeResult(TypedDict):
    resumed: Literal[True]


class SendResult(TypedDict):
    sent: Literal[True]


class RestartChildResult(TypedDict):
    """The new child's pid (null: its start returned ignore)."""

    pid: PidText | None


class TerminateChildResult(TypedDict):
    terminated: Literal[True]


class TraceResult(TypedDict):
    """Untimed: ``traced`` (``on``) or ``untraced``, the live processes switched,
    and ``rate_limit_per_s``. A trace session started: ``trace``, ``pids``,
    ``names`` and its limits; stopped: ``trace``, ``end``, ``count``, ``dropped``."""

    traced: NotRequired[list[PidText]]
    untraced: NotRequired[list[PidText]]
    rate_limit_per_s: NotRequired[float]
    trace: NotRequired[str]
    pids: NotRequired[list[PidText]]
    names: NotRequired[dict[str, str]]
    dir: NotRequired[Literal["in", "out", "both"]]
    max_msgs: NotRequired[int]
    max_rate: NotRequired[int]
    duration: NotRequired[float]
    started: NotRequired[float]
    end: NotRequired[str]
    count: NotRequired[int]
    dropped: NotRequired[int]


class FlightRecorderResult(TypedDict):
    on: bool
    size: int
    subtree: bool
    pids: list[PidText]


class DumpResult(TypedDict):
    path: str


class CancelResult(TypedDict):
    """``cancelled``: what ``Task.cancel()`` answered; ``cancelling``: requests so far."""

    pid: PidText
    cancelled: bool
    cancelling: int


COMMAND_RESULTS: Final[dict[str, type]] = {
    "ping": PingResult,
    "snapshot": SnapshotResult,
    "info": InfoResult,
    "inspect": InspectResult,
    "mailbox": MailboxResult,
    "processes": ProcessesResult,
    "kill": KillResult,
    "suspend": SuspendResult,
    "resume": ResumeResult,
    "send": SendResult,
    "restart_child": RestartChildResult,
    "terminate_child": TerminateChildResult,
    "trace": TraceResult,
    "flight_recorder": FlightRecorderResult,
    "dump": DumpResult,
    "cancel": CancelResult,
}
"""Each command and the shape of its result (a reply does not name its command:
the observer knows which ``id`` it sent; the schema has each as a definition)."""

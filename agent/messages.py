"""The shape of every message of the agent <-> observer protocol, declared once.

TypedDicts (plain dicts at run time: building one costs nothing more than a
dict): the agent builds its frames as these, the observer reads them through
:mod:`agent.protocol`'s ``read_*`` functions, and ``docs/protocol.schema.json``
is generated from them (``python -m agent.schema``; the tests check real
frames of every kind against it). ``Annotated[T, Schema(...)]`` adds JSON
Schema keywords to a field's type. :data:`EVENTS`, :data:`AGENT_FRAMES` and
:data:`OBSERVER_FRAMES` list every kind; each command's arguments and result
are in :mod:`agent.command_shapes`; ``docs/protocol.md`` is the prose. One
module of declarations on purpose (~650 lines): the frames read in one place.
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict, final

__all__ = [
    "AGENT_FRAMES",
    "EVENTS",
    "FEATURES",
    "FEATURE_BATCH",
    "OBSERVER_FRAMES",
    "PUSH_TYPES",
    "AuthMsg",
    "BatchMsg",
    "Budget",
    "ChildId",
    "CommandMsg",
    "CrashReport",
    "CrashReportError",
    "DemonitorEvent",
    "DialMsg",
    "ErrorBody",
    "ErrorMsg",
    "Event",
    "EventHeader",
    "EventMsg",
    "ExitEvent",
    "Finite",
    "FlightRecord",
    "GapMsg",
    "GaveUpEvent",
    "HelloMsg",
    "LinkEvent",
    "LoopBlockedEvent",
    "LoopUnblockedEvent",
    "MonitorEvent",
    "NodeMeta",
    "NodeStats",
    "PidText",
    "ProcessMeta",
    "ProcessRecord",
    "PushMsg",
    "ReasonKind",
    "RedactedValue",
    "RegisterEvent",
    "ReplyError",
    "ReplyMsg",
    "ReplyOk",
    "ReportAncestor",
    "ReportException",
    "ReportFrame",
    "RestartEvent",
    "ResumeEvent",
    "SampleRow",
    "SamplesMsg",
    "Schema",
    "SnapshotBeginMsg",
    "SnapshotChunkMsg",
    "SnapshotEndMsg",
    "SpawnEvent",
    "StackEntry",
    "Status",
    "SuspendEvent",
    "Time",
    "TraceArrow",
    "TraceEvent",
    "TraceMsg",
    "UnlinkEvent",
    "UpdateEvent",
    "Value",
    "WelcomeMsg",
    "fields",
    "required_keys",
]


class Schema:
    """JSON Schema keywords for a field's type: ``Annotated[T, Schema(pattern=...)]``."""

    __slots__ = ("keywords",)

    def __init__(self, **keywords: Any) -> None:
        self.keywords = keywords


PidText = Annotated[str, Schema(name="PidText", pattern=r"^<\d+\.\d+\.\d+>$", description="a pid: <node.serial.0>")]
Time = Annotated[float, Schema(description="wall clock, seconds since the epoch")]
Finite = Annotated[
    float | Literal["inf", "-inf", "nan"],
    Schema(name="Finite", description="a number; a non-finite one is sent as its text"),
]
ChildId = Annotated[str | None, Schema(description="a supervisor's id for the child (its repr past a string), capped")]
Status = Literal["running", "waiting", "suspended", "exiting"]
ReasonKind = Literal["normal", "shutdown", "killed", "noproc", "exception", "other"]
Value = Annotated[Any, Schema(description="a value from the running system, redacted and bounded (docs/protocol.md)")]


class Budget(TypedDict):
    """A supervisor's restart budget: restarts ``used`` of ``intensity`` per ``period`` seconds."""

    used: int
    intensity: Finite
    period: Finite
    strategy: str


class ProcessMeta(TypedDict):
    """The slowly-changing fields of a process (sent whole in ``update``)."""

    name: str | None
    label: str | None
    supervisor: PidText | None
    child_id: ChildId
    kind: str
    restarts: int
    trap_exit: bool
    budget: Budget | None


class ProcessRecord(TypedDict):
    """One process in a snapshot (``budget`` is null except for supervisors).
    An asyncio node's task records leave out the actor-only fields
    (``child_id``, ``restarts``, ``mailbox``, ``msgs_in``, ``msgs_out``,
    ``links``, ``monitors``, ``trap_exit``, ``budget``): read them as their
    defaults (none, 0, 0, 0, 0, [], [], false, null); an actors node sends
    them all."""

    pid: PidText
    name: str | None
    label: str | None
    kind: str
    status: Status
    supervisor: PidText | None
    parent: PidText | None
    child_id: NotRequired[ChildId]
    restarts: NotRequired[int]
    mailbox: NotRequired[int]
    msgs_in: NotRequired[int]
    msgs_out: NotRequired[int]
    handled: int
    handler_time: float
    links: NotRequired[list[PidText]]
    monitors: NotRequired[list[PidText]]
    trap_exit: NotRequired[bool]
    started_at: Time
    budget: NotRequired[Budget | None]
    coro: NotRequired[str | None]
    """asyncio nodes: the task's coroutine (docs/asyncio.md)."""
    created_at: NotRequired[str | None]
    """asyncio nodes: ``file:line in function`` that created the task."""
    origin: NotRequired[str]
    """asyncio nodes: ``task``, ``callback``, ``threadsafe`` or ``adopted``."""
    task_state: NotRequired[str]
    """asyncio nodes: ``pending`` (a live task)."""
    cancelling: NotRequired[int]
    """asyncio nodes: cancellations requested."""


class NodeMeta(TypedDict):
    """Who the agent runs in (``welcome`` and ``snapshot_begin``: after authentication only)."""

    node_id: int
    os_pid: int
    host: str
    python: str
    started_at: Time
    agent_version: str
    process_count: int
    sample_hz: float
    node_kind: NotRequired[str]
    """``actors``, or ``asyncio`` for a plain event loop (docs/asyncio.md)."""
    loop: NotRequired[str]
    """asyncio nodes: the loop's class."""


class NodeStats(TypedDict):
    """Node-wide figures sent with each round of samples."""

    time: Time
    process_count: int
    messages: int
    messages_total: int
    restarts: int
    crashes: int
    loop_lag_ms: float
    events_dropped: int
    trace_dropped: int
    seq: int
    sample_cost_ms: float
    node_kind: NotRequired[str]
    tasks: NotRequired[int]
    """asyncio nodes: tasks alive (also ``process_count``, with the scopes)."""
    scopes: NotRequired[int]
    tasks_created_total: NotRequired[int]
    tasks_finished_total: NotRequired[int]
    tasks_created_per_s: NotRequired[float]
    tasks_finished_per_s: NotRequired[float]
    hook_errors: NotRequired[int]
    factory_replaced: NotRequired[bool]


SampleRow = Annotated[
    list[Any],
    Schema(
        name="SampleRow",
        description="pid, mailbox, msgs_in, msgs_out, handled, handler_time, status, memory (SAMPLE_FIELDS)",
        prefixItems=[
            {"$ref": "#/$defs/PidText"},
            {"type": "integer"},
            {"type": "integer"},
            {"type": "integer"},
            {"type": "integer"},
            {"type": "number"},
            {"enum": ["running", "waiting", "suspended", "exiting"]},
            {"type": ["integer", "null"]},
        ],
        minItems=8,
        items=False,
    ),
]
SAMPLE_FIELDS: Final = ("pid", "mailbox", "msgs_in", "msgs_out", "handled", "handler_time", "status", "memory")
"""Columns of each row of a ``samples`` message."""


class StackEntry(TypedDict):
    function: str
    file: str
    line: int | None


class RedactedValue(TypedDict):
    """A value from the system as encoded for the wire (``size``: its encoded bytes)."""

    value: Value
    truncated: bool
    masked: int
    size: int


class ReportFrame(TypedDict):
    file: str
    line: int | None
    function: str
    source: str | None
    own: bool


class ReportException(TypedDict):
    type: str
    message: str | None
    relation: str | None
    frames: list[ReportFrame]


class ReportAncestor(TypedDict):
    pid: PidText
    name: str | None


class FlightRecord(TypedDict):
    time: Time
    duration: float | None
    kind: str
    message: Value


@final  # so that `"traceback" in report` tells it from a CrashReportError
class CrashReport(TypedDict):
    """What a process was doing when it crashed (the ``report`` of an ``exit``).
    Past the agent's rate, ``message``, ``state`` and ``flight`` are left out
    (``omitted: "rate"``)."""

    pid: PidText
    name: str | None
    label: str | None
    time: Time
    reason: str | None
    own: bool
    kind: str
    exception: str | None
    exceptions: list[ReportException]
    traceback: str | None
    message_kind: str | None
    message: RedactedValue | None
    state: RedactedValue | None
    ancestry: list[ReportAncestor]
    supervisor: PidText | None
    child_id: ChildId
    restarts: int
    budget: Budget | None
    flight: list[FlightRecord] | None
    handled: int
    mailbox: int
    omitted: NotRequired[Literal["rate"]]
    coro: NotRequired[str | None]
    """asyncio nodes: the task's coroutine (docs/asyncio.md)."""
    created_at: NotRequired[str | None]
    """asyncio nodes: ``file:line in function`` that created the task."""
    parent: NotRequired[PidText | None]
    """asyncio nodes: the task that created it."""
    steps: NotRequired[int]
    message_text: NotRequired[str | None]
    """asyncio nodes: what the loop's exception handler or the log record said."""
    task: NotRequired[PidText | None]
    """asyncio nodes: the task that logged the error."""


@final
class CrashReportError(TypedDict):
    """A report that could not be encoded."""

    pid: str
    error: str


# -- events: {"t": "ev", "seq": n, "ev": kind, ...} ---------------------------------------------------


class EventHeader(TypedDict):
    """Added to every event body when it is published: ``seq`` counts every
    event of the agent (a gap in it is announced by a ``gap`` frame)."""

    t: Literal["ev"]
    seq: int


class SpawnEvent(TypedDict):
    """A process started; with its meta when it was still alive at encoding time."""

    ev: Literal["spawn"]
    pid: PidText
    name: str | None
    label: str | None
    parent: PidText | None
    time: Time
    supervisor: NotRequired[PidText | None]
    child_id: NotRequired[ChildId]
    kind: NotRequired[str]
    restarts: NotRequired[int]
    trap_exit: NotRequired[bool]
    budget: NotRequired[Budget | None]
    coro: NotRequired[str | None]
    """asyncio nodes: the task's coroutine (docs/asyncio.md)."""
    created_at: NotRequired[str | None]
    """asyncio nodes: ``file:line in function`` that created the task."""
    origin: NotRequired[str]
    """asyncio nodes: ``task``, ``callback``, ``threadsafe`` or ``adopted``."""


class ExitEvent(TypedDict):
    """A process exited; ``report`` is its crash report (null for a normal exit)."""

    ev: Literal["exit"]
    pid: PidText
    name: str | None
    label: str | None
    reason: str
    reason_kind: ReasonKind
    exception: str | None
    traceback: str | None
    time: Time
    report: NotRequired[CrashReport | CrashReportError | None]
    state: NotRequired[str]
    """asyncio nodes: ``done``, ``cancelled``, ``failed`` or ``destroyed``."""


class RestartEvent(TypedDict):
    """A supervisor restarted a child (``new_pid`` null: it did not come back)."""

    ev: Literal["restart"]
    supervisor: PidText
    child_id: ChildId
    old_pid: PidText | None
    new_pid: PidText | None
    restarts: int
    time: Time


class LinkEvent(TypedDict):
    ev: Literal["link"]
    a: PidText
    b: PidText
    time: Time


class UnlinkEvent(TypedDict):
    ev: Literal["unlink"]
    a: PidText
    b: PidText
    time: Time


class MonitorEvent(TypedDict):
    ev: Literal["monitor"]
    watcher: PidText | None
    target: str
    ref: str
    time: Time


class DemonitorEvent(TypedDict):
    ev: Literal["demonitor"]
    watcher: PidText | None
    target: str
    ref: str
    time: Time


class RegisterEvent(TypedDict):
    """A name registered (``pid`` null: unregistered)."""

    ev: Literal["register"]
    name: str
    pid: PidText | None
    time: Time


class SuspendEvent(TypedDict):
    ev: Literal["suspend"]
    pid: PidText
    time: Time


class ResumeEvent(TypedDict):
    ev: Literal["resume"]
    pid: PidText
    time: Time


class GaveUpEvent(TypedDict):
    """A supervisor's restart intensity was exceeded: it exits."""

    ev: Literal["gave_up"]
    supervisor: PidText
    child_id: ChildId
    restarts: int
    intensity: Finite
    period: Finite
    time: Time


class UpdateEvent(ProcessMeta):
    """A process's meta changed (sent whole; one field or more changed)."""

    ev: Literal["update"]
    pid: PidText
    time: Time


class TraceEvent(TypedDict):
    """A message of a traced process (``to`` on ``out`` only)."""

    ev: Literal["trace"]
    dir: Literal["in", "out"]
    pid: PidText
    to: NotRequired[str]
    message: Value
    time: Time


class LoopBlockedEvent(TypedDict):
    """The host's event loop has not run for a while (``pid``: the process then running, if any)."""

    ev: Literal["loop_blocked"]
    pid: PidText | None
    name: str | None
    blocked_ms: float
    stack: list[StackEntry]
    time: Time


class LoopUnblockedEvent(TypedDict):
    ev: Literal["loop_unblocked"]
    pid: PidText | None
    blocked_ms: float
    time: Time


Event = (
    SpawnEvent
    | ExitEvent
    | RestartEvent
    | LinkEvent
    | UnlinkEvent
    | MonitorEvent
    | DemonitorEvent
    | RegisterEvent
    | SuspendEvent
    | ResumeEvent
    | GaveUpEvent
    | UpdateEvent
    | TraceEvent
    | LoopBlockedEvent
    | LoopUnblockedEvent
)
"""An event body as the agent builds it (``t`` and ``seq`` are added when published)."""

EVENTS: Final[dict[str, type]] = {
    "spawn": SpawnEvent,
    "exit": ExitEvent,
    "restart": RestartEvent,
    "link": LinkEvent,
    "unlink": UnlinkEvent,
    "monitor": MonitorEvent,
    "demonitor": DemonitorEvent,
    "register": RegisterEvent,
    "suspend": SuspendEvent,
    "resume": ResumeEvent,
    "gave_up": GaveUpEvent,
    "update": UpdateEvent,
    "trace": TraceEvent,
    "loop_blocked": LoopBlockedEvent,
    "loop_unblocked": LoopUnblockedEvent,
}
"""Each ``ev`` value and the shape of its body."""

EVENT_KINDS: Final = tuple(EVENTS)
"""``ev`` values of ``{"t": "ev", "seq": n, "ev": kind, ...}`` messages."""

PROCESS_FIELDS: Final = tuple(ProcessRecord.__annotations__)
"""Fields of one process record in a snapshot."""

CHANGE_KINDS: Final = (*EVENT_KINDS, "reset", "samples", "gap", "status", "error")
"""What an observer tells its browsers changed: each event kind, and ``reset``
(a snapshot replaced the picture), ``samples``, ``gap``, ``status`` (the node
went up, down, syncing) and ``error``. ``web/static/js`` is checked against it."""


# -- frames, agent -> observer ---------------------------------------------------------------------


class HelloMsg(TypedDict):
    """The agent's first frame, before any authentication: only what the
    handshake needs (the node's details come in ``welcome``, since protocol 2)."""

    t: Literal["hello"]
    protocol: Literal["observer-agent"]
    versions: list[int]
    nonce: str
    agent: str
    """The agent's id (random per agent start), bound into both MACs."""


class WelcomeMsg(TypedDict):
    """The handshake succeeded: the agent's proof, and what this session may do."""

    t: Literal["welcome"]
    version: int
    role: str
    mac: str
    session: str
    commands: list[str]
    sample_hz: float
    node_kind: NotRequired[str]
    """Repeats the hello's: the commands offered depend on it."""
    features: NotRequired[list[str]]
    """The features of the auth's ``features`` this agent grants (sent only when the auth asked)."""
    node: NodeMeta
    """The node's details (host name, OS pid, Python, ...): only after authentication."""


class ErrorMsg(TypedDict):
    """A refusal or a fatal error; the agent closes the connection after it."""

    t: Literal["error"]
    code: str
    message: str


class ErrorBody(TypedDict):
    code: str
    message: str


class ReplyOk(TypedDict):
    """A command's result (its shape depends on the command: docs/protocol.md)."""

    t: Literal["reply"]
    id: int | str
    ok: Literal[True]
    result: Any


class ReplyError(TypedDict):
    """A command refused or failed: exactly one reply per command, this one included."""

    t: Literal["reply"]
    id: int | str
    ok: Literal[False]
    error: ErrorBody


ReplyMsg = ReplyOk | ReplyError


class SnapshotBeginMsg(TypedDict):
    """A full picture follows: ``count`` processes in chunks, as of event ``seq``."""

    t: Literal["snapshot_begin"]
    seq: int
    count: int
    node: NodeMeta


class SnapshotChunkMsg(TypedDict):
    t: Literal["snapshot_chunk"]
    seq: int
    procs: list[ProcessRecord]


class SnapshotEndMsg(TypedDict):
    """The snapshot is complete; ``names`` maps registered names to pids."""

    t: Literal["snapshot_end"]
    seq: int
    names: dict[str, PidText]


class GapMsg(TypedDict):
    """Events were dropped under load; a fresh snapshot follows."""

    t: Literal["gap"]
    dropped: int


class SamplesMsg(TypedDict):
    """Counter rows of the processes that changed (``node``: on the first frame of a round)."""

    t: Literal["samples"]
    rows: list[SampleRow]
    node: NodeStats | None


class EventMsg(EventHeader):
    """An event frame as read: the header, ``ev`` and the rest of its body (see :data:`EVENTS`)."""

    ev: str


FEATURE_BATCH: Final = "batch"
"""Feature: the agent may send several events in one :class:`BatchMsg` frame."""
FEATURES: Final = (FEATURE_BATCH,)
"""Features negotiated in the handshake (``auth.features`` asks, ``welcome.features`` grants),
independent of the protocol version: an observer that asks for none is served as before."""


class BatchMsg(TypedDict):
    """Several ``ev`` frames in one, in ``seq`` order (only to a session granted ``batch``):
    read exactly as if each item had come in a frame of its own."""

    t: Literal["batch"]
    evs: list[dict[str, Any]]


TraceArrow = TypedDict(
    "TraceArrow",
    {
        "n": int,
        "time": float,
        "kind": Literal["send", "call", "reply", "error", "cast"],
        "from": "PidText | None",
        "to": "PidText | str | None",
        "msg": "Value",
        "masked": int,
        "truncated": bool,
        "call": "int | None",
        "latency_ms": "float | None",
        "to_name": NotRequired[str],
    },
)
TraceArrow.__doc__ = """One message of a trace session (agent/_trace.py): ``from``/``to`` null
is outside the traced processes; a call and its reply share ``call``."""


class TraceMsg(TypedDict):
    """Arrows of a trace session, to the observer that started it only; the
    last frame has ``end`` (msgs, rate, duration, exited, detached, stopped,
    agent_stopped)."""

    t: Literal["trace"]
    trace: str
    msgs: list[TraceArrow]
    count: int
    dropped: int
    end: NotRequired[str]


class DialMsg(TypedDict):
    """An agent that dials out to the observer says who it is before the ``hello``."""

    t: Literal["dial"]
    protocol: Literal["observer-agent"]
    name: str


# -- frames, observer -> agent ---------------------------------------------------------------------


class AuthMsg(TypedDict):
    """The observer's answer to ``hello``: its nonce, the role it asks for, its proof."""

    t: Literal["auth"]
    version: int
    nonce: str
    observer: str
    """The observer's id (at most 128 characters), bound into both MACs."""
    role: str
    mac: str
    features: NotRequired[list[str]]
    """Optional features this observer reads (:data:`FEATURES`); an older observer sends none."""


class CommandMsg(TypedDict):
    """A command (see :data:`ALL_COMMANDS`); an unknown one gets an error reply."""

    t: Literal["cmd"]
    id: int | str
    cmd: str
    args: dict[str, Any]


PushMsg = SnapshotBeginMsg | SnapshotChunkMsg | SnapshotEndMsg | GapMsg | SamplesMsg | EventMsg | TraceMsg | ErrorMsg
"""What the agent pushes after the handshake (besides replies)."""

AGENT_FRAMES: Final[dict[str, tuple[type, ...]]] = {
    "hello": (HelloMsg,),
    "welcome": (WelcomeMsg,),
    "error": (ErrorMsg,),
    "reply": (ReplyOk, ReplyError),
    "snapshot_begin": (SnapshotBeginMsg,),
    "snapshot_chunk": (SnapshotChunkMsg,),
    "snapshot_end": (SnapshotEndMsg,),
    "gap": (GapMsg,),
    "samples": (SamplesMsg,),
    "trace": (TraceMsg,),
    "ev": tuple(EVENTS.values()),
    "batch": (BatchMsg,),
    "dial": (DialMsg,),
}
"""Every frame type the agent sends, and its shapes."""
OBSERVER_FRAMES: Final[dict[str, tuple[type, ...]]] = {"auth": (AuthMsg,), "cmd": (CommandMsg,)}
"""Every frame type the observer sends."""

PUSH_TYPES: Final = frozenset(
    {"snapshot_begin", "snapshot_chunk", "snapshot_end", "gap", "samples", "ev", "trace", "error"}
)


def fields(shape: type) -> dict[str, tuple[Any, bool]]:
    """Each field of a message shape: its type (``NotRequired`` unwrapped,
    ``Annotated`` kept) and whether it is required. (``__required_keys__``
    cannot be trusted here: with postponed annotations Python 3.11 does not
    see ``NotRequired``.)"""
    out: dict[str, tuple[Any, bool]] = {}
    total = getattr(shape, "__total__", True)
    for name, tp in typing.get_type_hints(shape, include_extras=True).items():
        required = total
        origin = typing.get_origin(tp)
        if origin is NotRequired or origin is typing.Required:
            required = origin is typing.Required
            tp = typing.get_args(tp)[0]
        out[name] = (tp, required)
    return out


@functools.cache
def required_keys(shape: type) -> frozenset[str]:
    """The keys a frame of this shape must have (worked out once per shape)."""
    return frozenset(k for k, (_, req) in fields(shape).items() if req)

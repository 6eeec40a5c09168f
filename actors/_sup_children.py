"""The supervisor's child table: the record of one child and the helpers
around it (OTP's ``#child{}``, ``check_startspec``, ``shutdown/2``).

Everything here runs in the supervisor's own process, on the node's loop.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from ._child_spec import BRUTAL_KILL, INFINITY, PERMANENT, TEMPORARY, ChildSpec, spec_error
from ._errors import NameTaken, ReceiveTimeout, StartError
from ._process import Process
from ._types import KILL, SHUTDOWN, Down, Exit, Pid, is_normal_shutdown


@dataclass
class Child:
    """The supervisor's record of one child (OTP's ``#child{}``)."""

    spec: ChildSpec
    pid: Pid | None = None
    restarts: int = 0
    extra: tuple[Any, ...] = field(default_factory=tuple)
    """simple_one_for_one: the start arguments (none kept for temporary children)."""
    restarting: bool = False
    """A restart failed and is retried from the mailbox (OTP's ``{restarting, Pid}``)."""


@dataclass(frozen=True, slots=True)
class TryAgain:
    child_id: Any
    pid_hint: Pid | None


@dataclass(frozen=True, slots=True)
class TryAgainDynamic:
    old_pid: Pid
    """The key of the restarting child: the pid it had before it exited."""


class SupError(Exception):
    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def check_startspec(specs: list[Any], auto_shutdown: str) -> Any:
    """Why these init specs cannot start (OTP's check_startspec), or None."""
    seen: set[Hashable] = set()
    for s in specs:
        if not isinstance(s, ChildSpec):
            return ("invalid_child_spec", s)
        err = spec_error(s, auto_shutdown)
        if err is not None:
            return err
        if s.id in seen:
            return ("duplicate_child_name", s.id)  # OTP's name for it, kept for compatibility there
        seen.add(s.id)
    return None


def error(reason: Any) -> tuple[str, Any]:
    return ("error", reason)


def start_failure(exc: BaseException) -> Any:
    """A failed start as OTP's reason: the start's own, and a name already
    taken as ``("already_started", holder)``."""
    if isinstance(exc, StartError):
        return exc.reason
    holder = getattr(exc, "pid", None) if isinstance(exc, NameTaken) else None
    return ("already_started", holder) if holder is not None else exc


def should_restart(restart: str, reason: Any) -> bool:
    if restart == PERMANENT:
        return True
    if restart == TEMPORARY:
        return False
    return not is_normal_shutdown(reason)


async def stop_pids(sup: Process, pids: list[Pid], shutdown: float | str) -> None:
    """Stop children as OTP does: monitor, unlink, flush their EXIT, send
    ``shutdown`` (or ``kill``), wait for DOWN up to the timeout, then ``kill``."""
    node = sup.node
    refs: dict[Any, Pid] = {}
    for pid in pids:
        ref = sup.monitor(pid)
        sup.unlink(pid)
        refs[ref] = pid
    gone = set(pids)
    sup.drop(lambda m: type(m) is Exit and m.pid in gone)
    reason = KILL if shutdown == BRUTAL_KILL else SHUTDOWN
    for pid in pids:
        node.exit(pid, reason, sender=sup.pid)
    pending = set(refs)

    def is_down(m: Any) -> bool:
        return type(m) is Down and m.ref in pending

    deadline = None if shutdown in (BRUTAL_KILL, INFINITY) else node.loop.time() + float(shutdown)
    while pending:
        if deadline is None:
            msg = await sup.receive(is_down)
        else:
            left = deadline - node.loop.time()
            try:
                msg = await sup.receive(is_down, timeout=max(left, 0.0))
            except ReceiveTimeout:
                for ref in pending:
                    node.exit(refs[ref], KILL, sender=sup.pid)
                deadline = None
                continue
        pending.discard(msg.ref)

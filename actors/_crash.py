"""Crash reports and the flight recorder.

A :class:`CrashReport` is built by the node at the moment a process exits
abnormally (any reason but ``normal``, ``shutdown`` and ``("shutdown", _)``)
and carried by the :class:`~actors.Exited` event. It tells the story of the
crash: the traceback (structured and formatted, with the cause/context
chain), the last message the process took out of its mailbox, the state its
gen_server had before that message's handler ran, its ancestry (the
supervisor path up to the root), its restart count and its supervisor's
restart budget at that moment, and, when the flight recorder is on, the
messages it handled before.

Cost on the hot path
    Nothing is copied or formatted before a crash. ``Process.receive`` keeps
    a *reference* to the message it returns (``Process.last_message``, one
    attribute store, which replaces the store the gen_server loop already
    did) and a gen_server keeps a reference to its state between two messages
    (``GenServer.state``, which it always did). The report is built only when
    a process dies abnormally, and only if an instrument is registered (nobody
    else would read it). ``Node(crash_reports=False)`` skips building it.
    Even then the node's loop only captures the exception chain (a reference
    to each exception and to its traceback as it is then: ~20 us a crash);
    the frames' source lines and the formatted text are worked out when the
    report is first read, by its reader (the agent's thread). Formatting
    with the ``traceback`` module at the crash cost the loop ~0.4 ms each.

Reference, not copy
    "The state before" is the object the handler was given. A handler that
    *mutates* that object in place before raising changes what the report
    shows (the report then shows the state as the handler left it). Handlers
    that return a new state (the usual functional style) are reported exactly.
    A server that stops itself with ``Stop(reason, state)`` (an abnormal
    reason) is reported with the state it returned in ``Stop``.
    A server that mutates in place and wants an exact "before" can opt in to
    a copy per message by setting the class attribute
    ``crash_state_copy = copy.deepcopy`` (any one-argument callable) on its
    :class:`~actors.GenServer` subclass: the loop then keeps
    ``crash_state_copy(state)`` before each handler, at that cost.

The flight recorder
    Off by default; turned on per process or per subtree with
    :meth:`Node.flight_recorder`. When on, each ``receive`` appends one tuple
    (start time, handling duration, message reference) to a bounded deque; when
    off, ``receive`` pays one attribute test. A subtree recorder is inherited
    by every process spawned inside it later (restarted children included).

Threading rules: everything here runs on the node's loop thread, except
reading a finished :class:`CrashReport`, which is immutable (its ``message``
and ``state`` are references to the dead process's objects; ``exceptions``
and ``traceback`` are worked out on first read and kept).
"""

from __future__ import annotations

import reprlib
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import format_reason
from ._messages import CallMsg, CastMsg, SysMsg
from ._traceback import ChainLink, ExceptionInfo, TraceFrame, capture_chain, format_chain, frames
from ._types import Pid

if TYPE_CHECKING:
    from ._node_state import NodeState
    from ._process import Process

__all__ = ["Ancestor", "CrashReport", "FlightEntry", "FlightRecorder"]

DEFAULT_FLIGHT_SIZE = 20


class Ancestor(NamedTuple):
    """One step of a process's ancestry."""

    pid: Pid
    """The ancestor's pid."""
    name: str | None
    """Its registered name, else its label."""


@dataclass(frozen=True, slots=True)
class FlightEntry:
    """One message handled, from the flight recorder."""

    time: float
    """Wall-clock time handling started."""
    duration: float | None
    """Seconds until the process asked for its next message (None for the
    message being handled when the process died)."""
    message: Any
    """The message (a reference; call/cast requests unwrapped, see ``kind``)."""
    kind: str
    """``call``, ``cast``, ``sys`` or ``info`` (any other message)."""


class CrashReport(NamedTuple):
    """The story of one abnormal exit (see the module docstring). A named
    tuple: an observed node builds one per crash, on its loop, and a frozen
    dataclass of these 22 fields cost six times more to build (callgrind:
    35,000 instructions against 5,400)."""

    pid: Pid
    """The process."""
    name: str | None
    """Its registered name when it died."""
    label: str | None
    """Its label."""
    time: float
    """Wall-clock time of the exit."""
    reason: Any
    """The exit reason (an exception keeps its ``__traceback__``)."""
    reason_text: str
    """The reason, formatted (:func:`actors.format_reason`)."""
    own: bool
    """True if the process itself ended this way (raised, returned, exited);
    False if an exit signal from another process killed it (then
    ``exceptions`` and ``traceback`` describe the reason it was sent, if an
    exception, not code the process ran)."""
    kind: str
    """``gen_server``, ``supervisor`` or ``worker``."""
    chain: tuple[ChainLink, ...]
    """The exception first, then its cause/context chain, as captured (see
    ``exceptions`` and ``traceback`` for the readable forms); empty if the
    reason is not an exception."""
    has_message: bool
    """False if the process never took a message (then ``message`` is None)."""
    message: Any
    """The last message taken from the mailbox (a call or cast's request,
    unwrapped: see ``message_kind``)."""
    message_kind: str | None
    """``call``, ``cast``, ``sys`` or ``info``."""
    has_state: bool
    """True for gen_server-like processes."""
    state: Any
    """The state before the last message's handler ran (see the module
    docstring: a reference, unless the server opted in to a copy)."""
    ancestry: tuple[Ancestor, ...]
    """Supervisor path to the root, root first, the process itself last.
    A process with no supervisor follows its parent instead."""
    supervisor: Pid | None
    """Its supervisor."""
    child_id: Any
    """Its child id under that supervisor."""
    restarts: int
    """How many times it had been restarted."""
    budget: Any
    """The supervisor's :class:`~actors.Budget` at the moment of the crash
    (before this exit is counted), or None."""
    flight: tuple[FlightEntry, ...] | None
    """The messages handled before (oldest first, the one being handled
    last), if the flight recorder was on; else None."""
    handled: int
    """Messages handled in this incarnation."""
    mailbox: int
    """Messages still queued when it died."""

    @property
    def exceptions(self) -> tuple[ExceptionInfo, ...]:
        """The chain with its frames (source lines included), built at each
        read (read it once): by the reader of the report, not by the node's
        loop when the process dies."""
        return tuple(ExceptionInfo(link.type, link.message, frames(link.tb), link.relation) for link in self.chain)

    @property
    def traceback(self) -> str | None:
        """The traceback, chain included, laid out as Python prints it (without
        the ``^^^`` position markers); None if the reason is not an exception.
        Built at each read, like ``exceptions``."""
        if not self.chain:
            return None
        return format_chain(self.chain)

    @property
    def innermost_own_frame(self) -> TraceFrame | None:
        """The innermost frame of the process's own code, if any."""
        excs = self.exceptions
        if not excs:
            return None
        own = [f for f in excs[0].frames if f.own]
        return own[-1] if own else None


class FlightRecorder:
    """The last ``size`` messages a process handled: (perf start, duration, message)."""

    __slots__ = ("entries", "size", "subtree")

    def __init__(self, size: int = DEFAULT_FLIGHT_SIZE, subtree: bool = False) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 10_000:
            raise ValueError("flight recorder size must be an integer in [1, 10000]")
        self.size = size
        self.subtree = subtree
        """Inherited by processes spawned by this one (set for a whole subtree)."""
        self.entries: deque[tuple[float, float, Any]] = deque(maxlen=size)


# -- building a report (only when a crash happens) ---------------------------------------


def unwrap(msg: Any) -> tuple[Any, str]:
    """A mailbox message as (what the code handled, its kind)."""
    t = type(msg)
    if t is CallMsg or t is CastMsg:
        return msg.request, "call" if t is CallMsg else "cast"
    if t is SysMsg:
        return msg.kind, "sys"
    return msg, "info"


def ancestry(node: NodeState, proc: Process) -> tuple[Ancestor, ...]:
    """The supervisor (else parent) path from the root down to ``proc``."""
    chain = [Ancestor(proc.pid, proc.name or proc.label)]
    up = proc.supervisor if proc.supervisor is not None else proc.parent
    seen = {proc.pid.id}
    while up is not None and up.id not in seen and len(chain) < 256:
        seen.add(up.id)
        p = node._get(up)
        if p is None:
            chain.append(Ancestor(up, None))
            break
        chain.append(Ancestor(p.pid, p.name or p.label))
        up = p.supervisor if p.supervisor is not None else p.parent
    chain.reverse()
    return tuple(chain)


def build_report(node: NodeState, proc: Process, reason: Any, own: bool) -> CrashReport:
    """Build the report for ``proc``, dying with ``reason`` now (loop thread)."""
    now = time.time()
    chain = capture_chain(reason) if isinstance(reason, BaseException) else ()
    b = proc.behaviour
    kind = str(getattr(b, "kind", "worker")) if b is not None else "worker"
    has_state = b is not None and hasattr(b, "state")
    state: Any = None
    if has_state:
        before = getattr(b, "_crash_state_before", _MISSING)
        state = before if before is not _MISSING else getattr(b, "state", None)
    has_message = proc.handled > 0
    message, message_kind = unwrap(proc.last_message) if has_message else (None, None)
    sup = node._get(proc.supervisor) if proc.supervisor is not None else None
    budget = None
    if sup is not None:
        fn = getattr(sup.behaviour, "budget", None)
        if fn is not None:
            try:
                budget = fn()
            except Exception:
                budget = None
    flight = None
    rec = proc._flight
    if rec is not None:
        offset = now - time.perf_counter()
        entries = []
        for t0, dt, m in list(rec.entries):
            body, k = unwrap(m)
            entries.append(FlightEntry(t0 + offset, dt, body, k))
        if has_message and proc._t0:
            entries.append(FlightEntry(proc._t0 + offset, None, message, message_kind or "info"))
        flight = tuple(entries)
    return CrashReport(
        pid=proc.pid,
        name=proc.name,
        label=proc.label,
        time=now,
        reason=reason,
        reason_text=format_reason(reason),
        own=own,
        kind=kind,
        chain=chain,
        has_message=has_message,
        message=message,
        message_kind=message_kind,
        has_state=has_state,
        state=state,
        ancestry=ancestry(node, proc),
        supervisor=proc.supervisor,
        child_id=proc.child_id,
        restarts=proc.restarts,
        budget=budget,
        flight=flight,
        handled=proc.handled,
        mailbox=proc.mailbox_len,
    )


_MISSING: Any = object()
_LOG_REPR = 2000
"""Characters of the last message and of the state kept in an exit log entry."""
_log_repr = reprlib.Repr()
_log_repr.maxlevel = 6
_log_repr.maxdict = _log_repr.maxlist = _log_repr.maxtuple = _log_repr.maxset = 50
_log_repr.maxfrozenset = _log_repr.maxdeque = _log_repr.maxarray = 50
_log_repr.maxstring = _log_repr.maxother = 500


def _log_text(value: Any) -> str:
    """A bounded, never-raising text of a term for the log: a big state costs
    a walk of its first levels and items, not a repr of all of it."""
    try:
        text = _log_repr.repr(value)
    except Exception as exc:
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= _LOG_REPR else text[: _LOG_REPR - 3] + "..."


def exit_log_text(proc: Process, reason: Any) -> str:
    """The text of the error logged when ``proc`` ends itself abnormally
    (OTP's error report): who it is, its last message and, for a gen_server,
    its state, then the reason. Reads references only; never raises on an
    unprintable value."""
    who = f"{proc.pid} ({proc.name or proc.label})" if (proc.name or proc.label) else str(proc.pid)
    b = proc.behaviour
    kind = str(getattr(b, "kind", "gen_server")) if b is not None else "process"
    lines = [f"{kind} {who} terminating"]
    if proc.handled > 0:
        message, message_kind = unwrap(proc.last_message)
        lines.append(f"** Last message in was ({message_kind}): {_log_text(message)}")
    else:
        lines.append("** Last message in was: none (no message handled)")
    if b is not None and hasattr(b, "state"):
        before = getattr(b, "_crash_state_before", _MISSING)
        state = before if before is not _MISSING else getattr(b, "state", None)
        lines.append(f"** When server state == {_log_text(state)}")
    text = format_reason(reason) if isinstance(reason, str | BaseException) else _log_text(reason)
    lines.append(f"** Reason for termination == {text}")
    return "\n".join(lines)


def descendants(node: NodeState, root: Process) -> list[Process]:
    """``root`` and every live process below it (by supervisor, else parent)."""
    kids: dict[int, list[Process]] = {}
    for p in node.iter_processes():
        up = p.supervisor if p.supervisor is not None else p.parent
        if up is not None:
            kids.setdefault(up.id, []).append(p)
    out = [root]
    i = 0
    while i < len(out):
        out.extend(kids.get(out[i].pid.id, ()))
        i += 1
    return out

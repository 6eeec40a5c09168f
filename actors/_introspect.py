"""Read-only introspection: frozen records the agent serializes as they are.

This is the whole surface an observer (the agent) reads the runtime through,
re-exported from :mod:`actors`:

* :func:`find_process` -- the live :class:`Process` for a pid or name, or None;
  :func:`task_process` -- the process whose task this is, or None;
* :func:`process_info` -- a frozen :class:`ProcessInfo` of one process;
* cheap single reads for a sampler's hot loop: :func:`process_status`,
  :func:`process_kind`, :func:`process_links`, :func:`process_monitors`
  (plus the public counters of :class:`Process`: ``msgs_in``, ``msgs_out``,
  ``handled``, ``handler_time``, ``mailbox_len``, ...);
* walks, costlier, on request: :func:`process_stack`, :func:`estimate_memory`;
* :func:`flight_recorder_info` -- whether the flight recorder is on, and how;
* :func:`format_exception_chain` -- an exception with its cause chain as text.

Concurrency rules: nothing here changes a process or waits, and nothing
raises for a process that is exiting. Functions may be called from another
thread than the node's loop: each attribute read is atomic, and a process that
exits between two reads is reported as it was (``alive=False``).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._traceback import capture_chain, format_chain
from ._types import Pid

if TYPE_CHECKING:
    import asyncio

    from ._node import Node
    from ._process import Process


@dataclass(frozen=True, slots=True)
class StackFrame:
    """One frame of a process's coroutine chain."""

    function: str
    """The function's name (qualified when known)."""
    filename: str
    """Source file."""
    lineno: int
    """Line the coroutine is suspended at (or running)."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What one process looks like right now."""

    pid: Pid
    """Its pid."""
    name: str | None
    """Registered name, if any."""
    label: str | None
    """Label: a type-like tag (defaults to the body function's or class's name)."""
    status: str
    """``running``, ``waiting`` (in receive), ``suspended`` or ``exiting``."""
    alive: bool
    """False once it exited."""
    mailbox_len: int
    """Messages queued."""
    msgs_in: int
    """Messages delivered to its mailbox since it started."""
    msgs_out: int
    """Messages it sent (calls and casts included)."""
    handled: int
    """Messages it took out of its mailbox."""
    handler_time: float
    """Seconds spent between taking a message and asking for the next one."""
    restarts: int
    """How many times its supervisor restarted this child before this incarnation."""
    supervisor: Pid | None
    """The supervisor that started it, if any."""
    parent: Pid | None
    """The process that spawned it, if any."""
    child_id: Any
    """Its id in the supervisor's child specs, if supervised."""
    links: tuple[Pid, ...]
    """Linked processes."""
    monitors: tuple[Pid, ...]
    """Processes it monitors."""
    monitored_by: tuple[Pid, ...]
    """Processes monitoring it (internal call monitors are not listed)."""
    trap_exit: bool
    """Whether it traps exits."""
    started_at: float
    """Wall-clock start time."""
    kind: str
    """``worker``, ``gen_server`` or ``supervisor``."""
    traced: bool
    """Whether message tracing is on for it."""


@dataclass(frozen=True, slots=True)
class FlightRecorderInfo:
    """How a process's flight recorder is set (see :meth:`Node.flight_recorder`)."""

    size: int
    """How many handled messages it keeps."""
    subtree: bool
    """Whether processes spawned below this one get one too."""


def find_process(node: Node, target: Pid | str) -> Process | None:
    """The live :class:`Process` for a pid or registered name, or None
    (:meth:`Node.process` raises instead). Any thread; never raises."""
    return node._get(target)


def task_process(node: Node, task: asyncio.Task[Any] | None) -> Process | None:
    """The live process whose body runs in ``task``, or None (a walk over
    every process: call when something is wrong, not per event)."""
    if task is None:
        return None
    for p in node.iter_processes():
        if p._task is task:
            return p
    return None


def process_links(p: Process) -> tuple[Pid, ...]:
    """Pids linked to ``p`` (in no particular order)."""
    links = p._links
    return tuple(links) if links else ()


def process_monitors(p: Process) -> tuple[Pid, ...]:
    """Pids ``p`` monitors."""
    mons = p._monitoring
    return tuple(mons.values()) if mons else ()


def flight_recorder_info(p: Process) -> FlightRecorderInfo | None:
    """The flight recorder's settings, None when it is off."""
    fl = p._flight
    return None if fl is None else FlightRecorderInfo(fl.size, fl.subtree)


def format_exception_chain(exc: BaseException) -> str:
    """``exc`` with its cause/context chain laid out as Python prints it
    (oldest first, at most a few links). May raise what a broken ``__str__``
    raises: callers serializing for a wire catch it."""
    return format_chain(capture_chain(exc))


ProcessStatus = Literal["running", "waiting", "suspended", "exiting"]


def process_status(p: Process) -> ProcessStatus:
    """``running``, ``waiting`` (in receive), ``suspended`` or ``exiting``."""
    if not p.alive:
        return "exiting"
    if p._suspended is not None:
        return "suspended"
    if p._waiter is not None:
        return "waiting"
    return "running"


def process_kind(p: Process) -> str:
    """``worker``, ``gen_server`` or ``supervisor`` (a behaviour's ``kind``)."""
    b = p.behaviour
    if b is None:
        return "worker"
    return str(getattr(b, "kind", "worker"))


def process_info(p: Process) -> ProcessInfo:
    """A frozen record of ``p`` as it is now (see :class:`ProcessInfo`)."""
    links = p._links
    mons = p._monitoring
    by = p._monitors
    return ProcessInfo(
        pid=p.pid,
        name=p.name,
        label=p.label,
        status=process_status(p),
        alive=p.alive,
        mailbox_len=p.mailbox_len,
        msgs_in=p.msgs_in,
        msgs_out=p.msgs_out,
        handled=p.handled,
        handler_time=p.handler_time,
        restarts=p.restarts,
        supervisor=p.supervisor,
        parent=p.parent,
        child_id=p.child_id,
        links=tuple(sorted(links)) if links else (),
        monitors=tuple(mons.values()) if mons else (),
        monitored_by=tuple(w.pid for w in list(by.values()) if hasattr(w, "pid")) if by else (),
        trap_exit=p.trap_exit,
        started_at=p.started_at,
        kind=process_kind(p),
        traced=p.traced,
    )


def process_stack(p: Process, limit: int = 64) -> list[StackFrame]:
    """Walk the coroutine chain of the process's task (``cr_await``), outermost first."""
    task = p._task
    if task is None or task.done():
        return []
    frames: list[StackFrame] = []
    obj: Any = task.get_coro()
    while obj is not None and len(frames) < limit:
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None) or getattr(obj, "ag_frame", None)
        if frame is None:
            break
        code = frame.f_code
        frames.append(StackFrame(getattr(code, "co_qualname", code.co_name), code.co_filename, frame.f_lineno))
        nxt = getattr(obj, "cr_await", None)
        if nxt is None:
            nxt = getattr(obj, "gi_yieldfrom", None)
        obj = nxt
    return frames


def estimate_memory(p: Process) -> int:
    """Shallow bytes: the record, its task, coroutine frames, mailbox and messages
    (estimated from the first 64 of a longer mailbox)."""
    total = sys.getsizeof(p) + sys.getsizeof(p.pid)
    for attr in (p._links, p._monitors, p._monitoring, p._mb):
        if attr is not None:
            total += sys.getsizeof(attr)
    mb = p._mb
    if mb:
        # a huge mailbox is not walked: the first 64 messages stand for the rest
        n = len(mb)
        head = list(itertools.islice(mb, 64))
        if head:
            total += sum(sys.getsizeof(msg) for msg in head) * n // len(head)
    task = p._task
    if task is not None:
        total += sys.getsizeof(task)
        obj: Any = task.get_coro()
        depth = 0
        while obj is not None and depth < 64:
            total += sys.getsizeof(obj)
            frame = getattr(obj, "cr_frame", None)
            if frame is not None:
                total += sys.getsizeof(frame)
            obj = getattr(obj, "cr_await", None)
            depth += 1
    return total

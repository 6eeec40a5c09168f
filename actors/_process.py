"""A process: a coroutine with a mailbox, links, monitors and counters.

Concurrency rules: every method here runs on the node's event loop thread.
The counters (``msgs_in``, ``msgs_out``, ``handled``, ``handler_time``) are plain
integers and floats updated in place; another thread may read them at any
moment (each read is atomic), which is how the agent samples them without
touching the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._errors import NoProcess, ProcessExit, ReceiveTimeout
from ._events import MessageReceived, MessageSent
from ._messages import CastMsg
from ._tracing import traced_call
from ._types import Pid, Ref

if TYPE_CHECKING:
    from ._crash import FlightRecorder
    from ._node import Node

_perf = time.perf_counter
_Future = asyncio.Future
"""A wait's future, made directly: ``loop.create_future()`` is one Python
call more per wait on the default loop (and makes this same class)."""
_TIMEOUT: Any = object()

ProcessFn = Callable[..., Awaitable[Any]]
"""A process body: ``async def body(proc: Process, *args) -> None``."""


class Process:
    """The handle a process body gets as its first argument (its ``self()``).

    Everything a process does to the world goes through it: ``send``,
    ``receive``, ``spawn_link``, ``link``, ``monitor``, ``call``, ``exit``.
    Outside code holds a :class:`Pid`, never a ``Process``.
    """

    __slots__ = (
        "pid",
        "node",
        "name",
        "label",
        "trap_exit",
        "parent",
        "supervisor",
        "child_id",
        "restarts",
        "started_at",
        "msgs_in",
        "msgs_out",
        "handled",
        "handler_time",
        "behaviour",
        "alive",
        "exit_reason",
        "traced",
        "last_message",
        "_flight",
        "_mb",
        "_waiter",
        "_task",
        "_links",
        "_monitors",
        "_monitoring",
        "_suspended",
        "_t0",
        "_adopting",
        "__weakref__",
    )

    def __init__(self, node: Node, pid: Pid, name: str | None, label: str | None, parent: Pid | None) -> None:
        self.pid = pid
        self.node = node
        self.name = name
        self.label = label
        self.trap_exit = False
        """When True, exit signals arrive as :class:`Exit` messages instead of
        killing the process (``kill`` still kills)."""
        self.parent = parent
        self.supervisor: Pid | None = None
        self.child_id: Any = None
        self.restarts = 0
        self.started_at = time.time()
        self.msgs_in = 0
        self.msgs_out = 0
        self.handled = 0
        self.handler_time = 0.0
        self.behaviour: Any = None
        self.alive = True
        self.exit_reason: Any = None
        self.traced = False
        self.last_message: Any = None
        """The message ``receive`` returned last (a reference, for crash reports;
        meaningful once ``handled`` > 0)."""
        self._flight: FlightRecorder | None = None
        """The flight recorder, when on (see :meth:`Node.flight_recorder`)."""
        self._mb: deque[Any] | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._links: set[Pid] | None = None
        self._monitors: dict[Any, Any] | None = None
        """Who watches this process: monitor ref -> watcher (a Process, a call's
        From keyed by itself, or a callback)."""
        self._monitoring: dict[Ref, Pid] | None = None
        self._suspended: asyncio.Future[None] | None = None
        self._t0 = 0.0
        self._adopting: tuple[Any, int] | None = None
        """Set by a supervisor while it starts a child: (child id, restarts) for
        the next process it spawns, so the child carries them from birth."""

    def __repr__(self) -> str:
        tag = self.name or self.label
        return f"<Process {self.pid}{' ' + tag if tag else ''}{'' if self.alive else ' dead'}>"

    # -- mailbox -------------------------------------------------------------

    def _deliver(self, msg: Any) -> None:
        """Append to the mailbox and wake the process if it waits. Never blocks."""
        mb = self._mb
        if mb is None:
            mb = self._mb = deque()
        mb.append(msg)
        self.msgs_in += 1
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    @property
    def mailbox_len(self) -> int:
        """Messages waiting in the mailbox."""
        mb = self._mb
        return len(mb) if mb is not None else 0

    def mailbox_peek(self, limit: int = 10) -> list[Any]:
        """The first ``limit`` messages in the mailbox, oldest first, not removed."""
        mb = self._mb
        if not mb:
            return []
        out: list[Any] = []
        for msg in mb:
            if len(out) >= limit:
                break
            out.append(msg)
        return out

    def drop(self, match: Callable[[Any], bool]) -> int:
        """Remove every queued message for which ``match`` is true; return how many."""
        mb = self._mb
        if not mb:
            return 0
        keep = [m for m in mb if not match(m)]
        dropped = len(mb) - len(keep)
        if dropped:
            mb.clear()
            mb.extend(keep)
        return dropped

    async def receive(self, match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
        """Take the next message, waiting for one if the mailbox is empty.

        With ``match``, take the oldest message for which ``match(msg)`` is
        true; the others stay in the mailbox, in order (selective receive).
        With ``timeout`` (seconds), raise :class:`ReceiveTimeout` if nothing
        (matching) arrives in time; ``timeout=0`` only looks at what is there.
        While the process is suspended, receive does not return.
        """
        # The plain receive is the hot path: its frame is built for every
        # message, so it keeps few locals and few instructions (each costs);
        # selective and timed receives are _receive. (``timeout`` is not
        # keyword-only: a keyword-only default costs a dict lookup per call.)
        t0 = self._t0
        if t0:
            # the message handled so far is done: its handling time
            now = _perf()
            self.handler_time += now - t0
            self._t0 = 0.0
            if self._flight is not None:
                self._flight.entries.append((t0, now - t0, self.last_message))
        else:
            now = 0.0
        if match is None and timeout is None:
            mb = self._mb
            if not mb or self._suspended is not None:
                while True:
                    if self._suspended is None:
                        # send clears _waiter before waking us; a cancelled
                        # wait leaves a done future there, which send skips
                        fut: asyncio.Future[None] = _Future(loop=self.node._loop)
                        self._waiter = fut
                        await fut
                    else:
                        await asyncio.shield(self._suspended)
                    mb = self._mb
                    if mb and self._suspended is None:
                        break
                now = 0.0
            msg = mb.popleft()
        else:
            msg = await self._receive(match, timeout)
            now = 0.0
        self.handled += 1
        self.last_message = msg
        # a message already there: handling starts at the instant already read
        self._t0 = now or _perf()
        if self.traced:
            self.node._emit(MessageReceived(self.pid, msg, time.time()))
        return msg

    async def _receive(self, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        """Selective and timed receive: returns the message taken (the
        caller, :meth:`receive`, does the accounting)."""
        handle: asyncio.TimerHandle | None = None
        scanned = 0
        try:
            while True:
                if self._suspended is not None:
                    await asyncio.shield(self._suspended)
                    continue
                mb = self._mb
                if mb:
                    if match is None:
                        return mb.popleft()
                    i = 0
                    for item in mb:
                        if i >= scanned and match(item):
                            del mb[i]
                            return item
                        i += 1
                    scanned = len(mb)
                loop = self.node.loop
                fut = loop.create_future()
                if timeout is not None and handle is None:
                    if timeout <= 0:
                        raise ReceiveTimeout(timeout)
                    handle = loop.call_later(timeout, _fire_timeout, fut)
                self._waiter = fut
                try:
                    res = await fut
                finally:
                    if self._waiter is fut:
                        self._waiter = None
                if res is _TIMEOUT:
                    raise ReceiveTimeout(timeout or 0.0)
        finally:
            if handle is not None:
                handle.cancel()

    # -- signals out ------------------------------------------------------------

    def send(self, dest: Pid | str, msg: Any) -> None:
        """Send ``msg`` to a pid or a registered name. Never blocks.

        A dead pid silently drops the message (as in Erlang). An unregistered
        name raises :class:`NoProcess` (Erlang's ``badarg``).
        """
        self.msgs_out += 1
        if type(dest) is Pid:
            p = self.node._procs.get(dest.id)
            if p is not None and (p.pid is dest or p.pid == dest):
                # _deliver, inlined: this is the hot path
                mb = p._mb
                if mb is None:
                    mb = p._mb = deque()
                mb.append(msg)
                p.msgs_in += 1
                w = p._waiter
                if w is not None:
                    p._waiter = None
                    try:
                        w.set_result(None)
                    except asyncio.InvalidStateError:
                        pass  # a wait that was cancelled (or timed out) left a done future
        else:
            p = self.node._names.get(dest)  # type: ignore[arg-type]
            if p is None:
                raise NoProcess(dest)
            p._deliver(msg)
        if self.traced:
            self.node._emit(MessageSent(self.pid, dest, msg, time.time()))

    def send_after(self, delay: float, dest: Pid | str, msg: Any) -> asyncio.TimerHandle:
        """Send ``msg`` to ``dest`` after ``delay`` seconds; ``cancel()`` the
        handle to stop it (see :meth:`Node.send_after`)."""
        self.msgs_out += 1
        return self.node.send_after(delay, dest, msg)

    def spawn(self, fn: ProcessFn, *args: Any, name: str | None = None, label: str | None = None) -> Pid:
        """Start a process running ``fn(proc, *args)``; this process is its parent."""
        return self.node._spawn(fn, args, name, label, self, False)

    def spawn_link(self, fn: ProcessFn, *args: Any, name: str | None = None, label: str | None = None) -> Pid:
        """Start a process linked to this one, atomically."""
        return self.node._spawn(fn, args, name, label, self, True)

    def spawn_monitor(
        self, fn: ProcessFn, *args: Any, name: str | None = None, label: str | None = None
    ) -> tuple[Pid, Ref]:
        """Start a process monitored by this one; returns ``(pid, ref)``."""
        pid = self.node._spawn(fn, args, name, label, self, False)
        return pid, self.monitor(pid)

    def link(self, pid: Pid) -> None:
        """Link to ``pid`` (both ways). If it is not alive: a process trapping
        exits gets an ``Exit(pid, "noproc")`` message; any other gets
        :class:`NoProcess` raised here, which it may catch (Erlang's ``noproc``
        error from ``link/1``)."""
        self.node._link(self, pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link with ``pid``, if any. An ``Exit`` message from it
        already in the mailbox stays there."""
        self.node._unlink(self, pid)

    def monitor(self, target: Pid | str) -> Ref:
        """Monitor a pid or name; exactly one :class:`Down` message will follow
        (at once, with ``noproc``, if it is not alive)."""
        return self.node._monitor(self, target)

    def demonitor(self, ref: Ref, *, flush: bool = False) -> None:
        """Remove a monitor. With ``flush``, also drop its ``Down`` message if it
        already arrived."""
        self.node._demonitor(self, ref, flush)

    def send_exit(self, pid: Pid | str, reason: Any) -> None:
        """Deprecated: use ``node.exit(pid, reason, sender=proc.pid)``, the one
        way to send an exit signal (:meth:`Node.exit`)."""
        warnings.warn(
            "Process.send_exit is deprecated; use node.exit(pid, reason, sender=proc.pid)",
            DeprecationWarning,
            stacklevel=2,
        )
        self.node.exit(pid, reason, sender=self.pid)

    def exit(self, reason: Any = "normal") -> None:
        """End this process now with ``reason`` (Erlang's ``exit/1``: raises
        :class:`ProcessExit`, which the runtime turns into the exit reason).
        Not a signal: to signal a process, :meth:`Node.exit`."""
        raise ProcessExit(reason)

    def register(self, name: str) -> None:
        """Register this process under ``name``."""
        self.node.register(name, self.pid)

    async def call(self, dest: Pid | str, request: Any, *, timeout: float | None = 5.0) -> Any:
        """``call`` a gen_server from this process (see :meth:`Node.call`)."""
        self.msgs_out += 1
        if self.traced:
            return await traced_call(self, dest, request, timeout)
        return await self.node.call(dest, request, timeout=timeout)

    def cast(self, dest: Pid | str, msg: Any) -> None:
        """``cast`` to a gen_server from this process (see :meth:`Node.cast`:
        never raises, a dead or unknown destination drops it)."""
        self.msgs_out += 1
        if self.traced:
            self.node._emit(MessageSent(self.pid, dest, CastMsg(msg), time.time()))
        self.node.cast(dest, msg)

    # -- life cycle ---------------------------------------------------------------

    def __call__(self, task: asyncio.Task[Any]) -> None:
        """The task's done callback (the process object itself, so that spawning
        allocates no bound method): see :meth:`_done`."""
        self._done(task)

    def _done(self, task: asyncio.Task[Any]) -> None:
        """Task done callback: turn the way the body ended into an exit reason."""
        self.node._dying.discard(task)
        if task.cancelled():
            reason: Any = "killed"
            # A cancelled task keeps its CancelledError, whose traceback holds the task's own
            # step frame: a cycle only the cyclic GC frees (11 objects a kill). Under a kill storm
            # they pile up and full collections pause the loop (100-500 ms at 10,000 processes).
            # Asking for the error hands it over and drops the task's reference to it.
            with contextlib.suppress(asyncio.CancelledError):
                task.exception()
        else:
            exc = task.exception()
            if exc is None:
                reason = "normal"
            elif isinstance(exc, ProcessExit):
                reason = exc.reason
            else:
                reason = exc
        if self.alive:
            self.node._terminate(self, reason)
        # the behaviour (a gen_server, a supervisor) points back at its process: a cycle that
        # would keep both, the task and the state, for the cyclic GC (its report is made already)
        self.behaviour = None


def _fire_timeout(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_result(_TIMEOUT)

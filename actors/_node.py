"""The node: owns every process, the registry, the pid counter and the clock.

There is no global state: two nodes in one interpreter know nothing of each
other. All methods run on the node's loop thread unless their name ends in
``_threadsafe``; read-only introspection (``processes``, ``info``) may also be
called from another thread, where it sees a consistent-enough picture (each
field read is atomic; a process may vanish between two reads, and is then
skipped).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ._calls import Calls
from ._crash import DEFAULT_FLIGHT_SIZE, FlightRecorder, descendants
from ._errors import NameTaken, NoProcess
from ._events import Linked, Resumed, Spawned, Suspended
from ._introspect import ProcessInfo, StackFrame, estimate_memory, process_info, process_stack
from ._process import Process, ProcessFn
from ._signals import Signals
from ._types import KILL, SHUTDOWN, Pid

T = TypeVar("T")


class Node(Calls, Signals):
    """A running actor system.

    Use it on your own loop::

        async with Node() as node:
            pid = node.spawn(worker)

    or in a thread of its own with :meth:`start_in_thread`. Leaving the
    ``async with`` (or :meth:`shutdown`) stops the tree in reverse start order.

    ``clock`` is the monotonic clock supervisors count restart intensity with
    (tests pass a fake one). ``log_crashes`` logs every exit whose reason is an
    exception, with its traceback, on the ``actors`` logger. ``crash_reports``
    (default on) builds a :class:`~actors.CrashReport` for every abnormal exit,
    carried by the ``Exited`` event (see :mod:`actors._crash`; off is for
    measuring its cost).

    Its parts: :mod:`actors._node_state` (the tables, lookups, registry and
    instruments), :mod:`actors._signals` (links, monitors, exit signals) and
    :mod:`actors._calls` (call and cast) are its bases; this module spawns,
    sends, suspends, traces and shuts down.
    """

    # -- loop ---------------------------------------------------------------------

    async def __aenter__(self) -> Node:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @classmethod
    def start_in_thread(cls, *, name: str = "actors-node", **kwargs: Any) -> Node:
        """Create a node running on a new event loop in a daemon thread.

        Use :meth:`run_threadsafe` to run coroutines on it from other threads
        and :meth:`stop_thread` to shut it down.
        """
        node = cls(**kwargs)
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            node._loop = loop
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        node._thread = threading.Thread(target=main, name=name, daemon=True)
        node._thread.start()
        ready.wait()
        return node

    def run_threadsafe(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the node's loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def apply_threadsafe(self, fn: Callable[[], T], *, timeout: float | None = 10.0) -> T:
        """Run the plain function ``fn()`` on the node's loop from another thread,
        wait (up to ``timeout`` seconds) and return its result or raise its
        exception. Never call it from the loop's own thread: it would wait on
        itself. (Not a gen_server call: that is :meth:`call`.)"""

        async def run() -> T:
            return fn()

        return self.run_threadsafe(run()).result(timeout)

    def call_threadsafe(self, fn: Callable[[], T], timeout: float | None = 10.0) -> T:
        """Deprecated alias of :meth:`apply_threadsafe` (the name read like a
        thread-safe gen_server :meth:`call`)."""
        warnings.warn("Node.call_threadsafe is deprecated; use Node.apply_threadsafe", DeprecationWarning, stacklevel=2)
        return self.apply_threadsafe(fn, timeout=timeout)

    def stop_thread(self, timeout: float = 10.0) -> None:
        """Shut the tree down and stop the loop started by :meth:`start_in_thread`."""
        if self._thread is None or self._loop is None:
            return
        try:
            self.run_threadsafe(self.shutdown()).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            self._thread = None

    # -- processes ------------------------------------------------------------------

    def spawn(self, fn: ProcessFn, *args: Any, name: str | None = None, label: str | None = None) -> Pid:
        """Start a process running ``fn(proc, *args)`` with no parent. Returns its pid."""
        return self._spawn(fn, args, name, label, None, False)

    def _spawn(
        self,
        fn: ProcessFn,
        args: tuple[Any, ...],
        name: str | None,
        label: str | None,
        parent: Process | None,
        link: bool,
    ) -> Pid:
        # every spawn comes through here: positional arguments only (a keyword
        # argument costs its lookup per call)
        if name is not None and name in self._names:
            raise NameTaken(name, self._names[name].pid)
        loop = self._loop
        if loop is None:
            loop = self.loop
        pid = Pid(self.node_id, next(self._serial))
        if label is None:
            label = getattr(fn, "__name__", None)
        if parent is None:
            proc = Process(self, pid, name, label, None)
        else:
            proc = Process(self, pid, name, label, parent.pid)
            if parent._adopting is not None:
                # a supervisor starting this child: supervised from birth, so the
                # Spawned event (and anything reading the process) already says so
                proc.child_id, proc.restarts = parent._adopting
                proc.supervisor = parent.pid
                parent._adopting = None
            if parent._flight is not None and parent._flight.subtree:
                proc._flight = FlightRecorder(parent._flight.size, subtree=True)
        self._procs[pid.id] = proc
        if name is not None:
            self._names[name] = proc
        if link and parent is not None:
            proc._links = {parent.pid}
            if parent._links is None:
                parent._links = {pid}
            else:
                parent._links.add(pid)
        task: asyncio.Task[Any] = loop.create_task(fn(proc, *args))  # type: ignore[arg-type]
        proc._task = task
        # Process.__call__: no bound method to allocate per spawn; and an empty
        # context shared by every process (the callback reads no context
        # variable), not a copy of the spawner's made for each
        task.add_done_callback(proc, context=_EMPTY_CONTEXT)
        if self._instruments:
            now = time.time()
            self._emit(Spawned(pid, name, proc.label, proc.parent, now))
            if link and parent is not None:
                self._emit(Linked(parent.pid, pid, now))
        return pid

    def send(self, dest: Pid | str, msg: Any) -> None:
        """Send from outside any process. A dead pid drops the message; an
        unregistered name raises :class:`NoProcess`."""
        p = self._get(dest)
        if p is None:
            if type(dest) is Pid:
                return
            raise NoProcess(dest)
        p._deliver(msg)

    def send_after(self, delay: float, dest: Pid | str, msg: Any) -> asyncio.TimerHandle:
        """Send ``msg`` to ``dest`` in ``delay`` seconds (Erlang's ``send_after``).

        Returns a handle whose ``cancel()`` stops it. An unregistered name at
        that time drops the message (it cannot raise into a timer)."""
        return self.loop.call_later(delay, self._send_quietly, dest, msg)

    def _send_quietly(self, dest: Pid | str, msg: Any) -> None:
        p = self._get(dest)
        if p is not None:
            p._deliver(msg)

    # -- suspend / resume / trace ------------------------------------------------------------

    def suspend(self, pid: Pid | str) -> None:
        """Suspend a process: it stops taking messages at its next ``receive``;
        messages queue meanwhile. Exit signals still act on it."""
        p = self.process(pid)
        if p._suspended is None:
            p._suspended = self.loop.create_future()
            if self._instruments:
                self._emit(Suspended(p.pid, time.time()))

    def resume(self, pid: Pid | str) -> None:
        """Resume a suspended process (no-op if it is not suspended)."""
        p = self.process(pid)
        fut = p._suspended
        if fut is not None:
            p._suspended = None
            if not fut.done():
                fut.set_result(None)
            if self._instruments:
                self._emit(Resumed(p.pid, time.time()))

    def flight_recorder(
        self, pid: Pid | str, on: bool = True, *, size: int = DEFAULT_FLIGHT_SIZE, subtree: bool = False
    ) -> list[Pid]:
        """Turn the flight recorder of a process (``subtree``: and of every
        process below it, by supervisor or parent, and of those spawned there
        later) on or off at run time; returns the pids changed. When on, crash
        reports carry the last ``size`` messages handled, with their start time
        and handling duration. Turning it on again resets what was recorded."""
        root = self.process(pid)
        targets = descendants(self, root) if subtree else [root]
        for p in targets:
            p._flight = FlightRecorder(size, subtree=subtree) if on else None
        return [p.pid for p in targets]

    def trace(self, pid: Pid | str, on: bool = True) -> None:
        """Turn message tracing of one process on or off (instruments get
        ``message_sent`` / ``message_received`` for it)."""
        self.process(pid).traced = on

    # -- introspection ---------------------------------------------------------------------------

    def info(self, pid: Pid | str) -> ProcessInfo:
        """A frozen record of one process (see :class:`ProcessInfo`)."""
        return process_info(self.process(pid))

    def stack(self, pid: Pid | str) -> list[StackFrame]:
        """The process's current coroutine chain, outermost first, with file:line."""
        return process_stack(self.process(pid))

    def memory(self, pid: Pid | str) -> int:
        """An estimate of the bytes held by one process (its record, task,
        coroutine frames and mailbox, shallow). Costs a walk: call on request."""
        return estimate_memory(self.process(pid))

    # -- shutdown ----------------------------------------------------------------------------------

    async def shutdown(self, *, timeout: float = 5.0) -> None:
        """Stop everything: top-level processes get ``shutdown`` in reverse
        start order (supervisors stop their children in reverse order), each
        waited for up to ``timeout`` seconds, then anything left is killed."""
        if self._closed:
            return
        self._closed = True
        current = asyncio.current_task()
        tasks = [p._task for p in self._procs.values() if p._task is not None and p._task is not current]
        roots = [p for p in self._procs.values() if p.supervisor is None]
        roots.sort(key=lambda p: p.pid.id, reverse=True)
        for p in roots:
            if not p.alive:
                continue
            done = p._task
            self._exit_from_node(p, SHUTDOWN)
            if p.alive and done is not None:
                # asyncio.wait, not wait_for: a body ending with ProcessExit (a
                # BaseException: every trapping gen_server / supervisor) or
                # cancelled must not escape from shutdown()
                await asyncio.wait({done}, timeout=timeout)
            if p.alive:
                self._exit_from_node(p, KILL)
        rest = list(self._procs.values())
        tasks.extend(p._task for p in rest if p._task is not None and p._task is not current)
        for p in rest:
            self._exit_from_node(p, KILL)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        tasks.extend(self._dying)
        pending = [t for t in tasks if not t.done() and t is not current]
        if pending:
            await asyncio.wait(pending, timeout=timeout)


_EMPTY_CONTEXT = contextvars.Context()
"""The context process-exit callbacks run in (they read no context variable)."""

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
import itertools
import logging
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ._crash import DEFAULT_FLIGHT_SIZE, FlightRecorder, build_report, descendants, exit_log_text
from ._errors import CallError, CallTimeout, NameTaken, NoProcess, ServerDied, check_timeout
from ._events import (
    Demonitored,
    Event,
    Exited,
    Instrument,
    Linked,
    Monitored,
    Registered,
    Resumed,
    Spawned,
    Suspended,
    Unlinked,
)
from ._introspect import ProcessInfo, StackFrame, estimate_memory, process_info, process_stack
from ._messages import CallMsg, CastMsg, From
from ._process import Process, ProcessFn
from ._types import KILL, KILLED, NOPROC, NORMAL, SHUTDOWN, Down, Exit, Pid, Ref, is_normal_shutdown

log = logging.getLogger("actors")
T = TypeVar("T")


class Node:
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
    """

    def __init__(
        self,
        *,
        node_id: int = 0,
        clock: Callable[[], float] = time.monotonic,
        log_crashes: bool = True,
        crash_reports: bool = True,
    ) -> None:
        self.node_id = node_id
        self.clock = clock
        self.log_crashes = log_crashes
        self.crash_reports = crash_reports
        self._loop: asyncio.AbstractEventLoop | None = None
        self._procs: dict[int, Process] = {}
        self._names: dict[str, Process] = {}
        self._serial = itertools.count(1)
        self._refs = itertools.count(1)
        self._instruments: list[Any] = []
        self._signals: deque[tuple[Process, Pid, Any, bool]] = deque()
        self._draining = False
        self._dying: set[asyncio.Task[Any]] = set()
        self._calls: dict[CallMsg, tuple[float, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.started_at = time.time()

    # -- loop ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this node runs on (bound on first use inside a loop)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

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
        return self._spawn(fn, args, name, label, None, link=False)

    def _spawn(
        self,
        fn: ProcessFn,
        args: tuple[Any, ...],
        name: str | None,
        label: str | None,
        parent: Process | None,
        *,
        link: bool,
    ) -> Pid:
        if name is not None and name in self._names:
            raise NameTaken(name, self._names[name].pid)
        loop = self._loop
        if loop is None:
            loop = self.loop
        pid = Pid(self.node_id, next(self._serial))
        if label is None:
            label = getattr(fn, "__name__", None)
        proc = Process(self, pid, name, label, parent.pid if parent is not None else None)
        if parent is not None and parent._adopting is not None:
            # a supervisor starting this child: supervised from birth, so the
            # Spawned event (and anything reading the process) already says so
            proc.child_id, proc.restarts = parent._adopting
            proc.supervisor = parent.pid
            parent._adopting = None
        if parent is not None and parent._flight is not None and parent._flight.subtree:
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

    def _get(self, target: Pid | str) -> Process | None:
        if type(target) is Pid:
            p = self._procs.get(target.id)
            if p is not None and (p.pid is target or p.pid == target):
                return p
            return None
        return self._names.get(target)  # type: ignore[arg-type]

    def process(self, target: Pid | str) -> Process:
        """The live :class:`Process` for a pid or name; raises :class:`NoProcess`.

        For the runtime's own behaviours and for introspection; user code talks
        to other processes through pids.
        """
        p = self._get(target)
        if p is None:
            raise NoProcess(target)
        return p

    def is_alive(self, target: Pid | str) -> bool:
        """True if the pid (or name) names a live process."""
        return self._get(target) is not None

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

    def exit(self, pid: Pid | str, reason: Any, *, sender: Pid | None = None) -> None:
        """Send an exit signal to ``pid``, as Erlang's ``exit/2``: the one way to
        send one (a process ends itself with :meth:`Process.exit`).

        ``kill`` kills it unconditionally (it exits with ``killed``); ``normal``
        is ignored unless the target traps exits; any other reason kills it
        unless it traps exits, in which case it gets an :class:`Exit` message.
        A dead pid is ignored. ``sender`` is the pid the target sees the
        signal come from (default ``<0.0.0>``, the node itself); a process
        signalling another passes its own pid.

        A process signalling itself (called from its own body) is handled at
        once, as in Erlang: unless it traps exits (then it gets the
        :class:`Exit` message; ``kill`` is never trapped) it is dead when the
        call returns control, with ``reason`` (``normal`` included) or
        ``killed`` for ``kill``: the call raises ``CancelledError`` to unwind
        its body, as for any process a signal kills.
        """
        p = self._get(pid)
        if p is None:
            return
        task = p._task
        if task is not None and task is asyncio.current_task(self._loop):
            is_kill = type(reason) is str and reason == KILL
            if p.trap_exit and not is_kill:
                p._deliver(Exit(p.pid if sender is None else sender, reason))
                return
            # killed by its own signal: dead now (links and monitors told),
            # and its body unwinds from here, as any process a signal kills
            # (a gen_server's terminate does not run; no crash is logged)
            self._die(p, KILLED if is_kill else reason)
            self._drain()
            raise asyncio.CancelledError
        self._signal(p, sender if sender is not None else Pid(self.node_id, 0), reason, False)

    def _exit_from_node(self, p: Process, reason: Any) -> None:
        """An exit signal from the node itself (shutdown), never raising."""
        self._signal(p, Pid(self.node_id, 0), reason, False)

    # -- registry --------------------------------------------------------------------

    def register(self, name: str, pid: Pid) -> None:
        """Register ``name`` for a live pid. Raises :class:`NameTaken` or :class:`NoProcess`."""
        p = self._get(pid)
        if p is None:
            raise NoProcess(pid)
        holder = self._names.get(name)
        if holder is not None:
            raise NameTaken(name, holder.pid)
        if p.name is not None:
            raise NameTaken(name, p.pid, f"{pid} is already registered as {p.name!r}")
        self._names[name] = p
        p.name = name
        if self._instruments:
            self._emit(Registered(name, pid, time.time()))

    def unregister(self, name: str) -> None:
        """Remove a registered name. Raises :class:`NoProcess` if it is not registered."""
        p = self._names.pop(name, None)
        if p is None:
            raise NoProcess(name)
        p.name = None
        if self._instruments:
            self._emit(Registered(name, None, time.time()))

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under ``name``, or None."""
        p = self._names.get(name)
        return p.pid if p is not None else None

    def registered(self) -> list[str]:
        """All registered names."""
        return list(self._names)

    # -- links and monitors ---------------------------------------------------------------

    def _link(self, proc: Process, pid: Pid) -> None:
        if pid == proc.pid:
            return
        other = self._get(pid)
        if other is None:
            # Erlang's link/1: noproc is an error raised in the caller, unless
            # it traps exits (then it is an EXIT message)
            if proc.trap_exit:
                proc._deliver(Exit(pid, NOPROC))
                return
            raise NoProcess(pid)
        if proc._links is None:
            proc._links = set()
        if pid in proc._links:
            return
        proc._links.add(pid)
        if other._links is None:
            other._links = set()
        other._links.add(proc.pid)
        if self._instruments:
            self._emit(Linked(proc.pid, pid, time.time()))

    def _unlink(self, proc: Process, pid: Pid) -> None:
        if proc._links is None or pid not in proc._links:
            return
        proc._links.discard(pid)
        other = self._get(pid)
        if other is not None and other._links is not None:
            other._links.discard(proc.pid)
        if self._instruments:
            self._emit(Unlinked(proc.pid, pid, time.time()))

    def make_ref(self) -> Ref:
        """A new unique reference."""
        return Ref(self.node_id, next(self._refs))

    def _monitor(self, watcher: Process, target: Pid | str) -> Ref:
        ref = self.make_ref()
        other = self._get(target)
        if other is None:
            pid = target if type(target) is Pid else Pid(self.node_id, 0)
            watcher._deliver(Down(ref, pid, NOPROC))
            return ref
        if other._monitors is None:
            other._monitors = {}
        other._monitors[ref] = watcher
        if watcher._monitoring is None:
            watcher._monitoring = {}
        watcher._monitoring[ref] = other.pid
        if self._instruments:
            self._emit(Monitored(watcher.pid, other.pid, ref, time.time()))
        return ref

    def _demonitor(self, watcher: Process, ref: Ref, flush: bool) -> None:
        target = watcher._monitoring.pop(ref, None) if watcher._monitoring else None
        if target is not None:
            other = self._get(target)
            if other is not None and other._monitors is not None:
                other._monitors.pop(ref, None)
            if self._instruments:
                self._emit(Demonitored(watcher.pid, target, ref, time.time()))
        if flush and watcher._mb:
            for i, msg in enumerate(watcher._mb):
                if type(msg) is Down and msg.ref == ref:
                    del watcher._mb[i]
                    break

    # -- exit signals ---------------------------------------------------------------------

    def _signal(self, target: Process, sender: Pid, reason: Any, link: bool) -> None:
        """Queue an exit signal and process the queue unless already doing so.

        Signals are processed iteratively, so a chain of 100,000 linked
        processes dying does not recurse.
        """
        self._signals.append((target, sender, reason, link))
        self._drain()

    def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            signals = self._signals
            while signals:
                t, s, r, is_link = signals.popleft()
                if not t.alive:
                    continue
                if type(r) is str and r == KILL and not is_link:
                    self._die(t, KILLED)
                elif t.trap_exit:
                    t._deliver(Exit(s, r))
                elif type(r) is str and r == NORMAL:
                    continue
                else:
                    self._die(t, r)
        finally:
            self._draining = False

    def _terminate(self, proc: Process, reason: Any) -> None:
        """A process's body ended: run the exit through the signal machinery."""
        self._die(proc, reason)
        self._drain()

    def _die(self, proc: Process, reason: Any) -> None:
        """Mark ``proc`` dead now, notify links and monitors (queued), cancel its task."""
        if not proc.alive:
            return
        proc.alive = False
        proc.exit_reason = reason
        pid = proc.pid
        if self._procs.get(pid.id) is proc:
            del self._procs[pid.id]
        if proc.name is not None and self._names.get(proc.name) is proc:
            del self._names[proc.name]
        if proc._suspended is not None:
            fut, proc._suspended = proc._suspended, None
            if not fut.done():
                fut.set_result(None)
        task = proc._task
        own = task is None or task.done()
        if task is not None and not own:
            task.cancel()
            self._dying.add(task)
        links = proc._links
        if links:
            proc._links = None
            procs = self._procs
            for lpid in links:
                other = procs.get(lpid.id)
                if other is not None and other.pid == lpid:
                    if other._links is not None:
                        other._links.discard(pid)
                    self._signals.append((other, pid, reason, True))
        mons = proc._monitors
        if mons:
            proc._monitors = None
            for ref, watcher in mons.items():
                if type(watcher) is Process:
                    if watcher._monitoring is not None:
                        watcher._monitoring.pop(ref, None)
                    if watcher.alive:
                        watcher._deliver(Down(ref, pid, reason))
                elif type(watcher) is From:
                    fut = watcher._fut
                    if not fut.done():
                        fut.set_exception(ServerDied(watcher.dest, reason))
                else:
                    watcher(pid, reason)
        held = proc._monitoring
        if held:
            proc._monitoring = None
            for ref, tpid in held.items():
                other = self._procs.get(tpid.id)
                if other is not None and other._monitors is not None:
                    other._monitors.pop(ref, None)
        if self.log_crashes and own and not is_normal_shutdown(reason):
            # OTP's error report: every exit the process made itself with a
            # reason other than normal / shutdown (killed by a signal: none)
            try:
                text = exit_log_text(proc, reason)
            except Exception:  # an unprintable state must not break the exit
                text = f"process {pid} exited: <unprintable report>"
            log.error("%s", text, exc_info=reason if isinstance(reason, Exception) else None)
        if self._instruments:
            report = None
            if self.crash_reports and not is_normal_shutdown(reason):
                try:
                    report = build_report(self, proc, reason, own)
                except Exception:  # never let a report break the exit
                    log.exception("could not build the crash report of %s", pid)
            self._emit(Exited(pid, reason, time.time(), proc.name, proc.label, report))

    # -- gen_server protocol ----------------------------------------------------------------

    async def call(self, dest: Pid | str, request: Any, *, timeout: float | None = 5.0) -> Any:
        """Send ``request`` to a gen_server and wait for its reply.

        Raises :class:`CallTimeout` if no reply comes within ``timeout`` seconds
        (None waits forever) and :class:`ServerDied` if the server is not alive
        or exits before replying. Never hangs on a dead server. A timeout that
        is not None or a number >= 0 raises ``ValueError`` / ``TypeError``
        before anything is sent.
        """
        if timeout is not None and timeout != 5.0:
            check_timeout(timeout)
        if type(dest) is Pid:
            p = self._procs.get(dest.id)
            if p is not None and p.pid is not dest and p.pid != dest:
                p = None
        else:
            p = self._names.get(dest)  # type: ignore[arg-type]
        if p is None:
            raise ServerDied(dest, NOPROC)
        loop = self._loop or self.loop
        task = p._task
        if task is not None and task is asyncio.current_task(loop):
            raise CallError(dest, "calling_self")  # it could never answer: fail now, as OTP does
        fut: asyncio.Future[Any] = loop.create_future()
        # the From is also the call's watch on the server: its death fails the
        # call (one object per call, no Ref: the From is its own key)
        from_ = From(fut, None, p, dest)
        mons = p._monitors
        if mons is None:
            mons = p._monitors = {}
        mons[from_] = from_
        msg = CallMsg(request, from_)
        p._deliver(msg)
        handle = None
        calls = self._calls
        if timeout is not None:
            if timeout >= _SWEPT_TIMEOUT:
                # long timeouts (the 5 s default) are checked by one sweeper
                # timer per node instead of one timer per call
                calls[msg] = (_monotonic() + timeout, timeout)
                if self._sweeper is None:
                    self._sweeper = loop.call_later(_SWEEP_EVERY, self._sweep_calls)
            else:
                handle = loop.call_later(timeout, _call_timeout, fut, dest, request, timeout)
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            elif timeout is not None:
                calls.pop(msg, None)
            mons = p._monitors
            if mons is not None:
                mons.pop(from_, None)

    def _sweep_calls(self) -> None:
        """Fail the calls whose deadline passed; re-arm while calls are pending."""
        self._sweeper = None
        calls = self._calls
        if not calls:
            return
        now = _monotonic()
        for msg, (deadline, timeout) in list(calls.items()):
            if deadline <= now:
                del calls[msg]
                from_ = msg.reply_to
                _call_timeout(from_._fut, from_.dest, msg.request, timeout)
        if calls:
            self._sweeper = self.loop.call_later(_SWEEP_EVERY, self._sweep_calls)

    def cast(self, dest: Pid | str, request: Any) -> None:
        """Send an asynchronous request to a gen_server. Never blocks, never
        raises: a dead pid or a name nobody holds drops it (OTP's fire and forget)."""
        p = self._get(dest)
        if p is not None:
            p._deliver(CastMsg(request))

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

    # -- instruments -----------------------------------------------------------------------------

    def add_instrument(self, instrument: Instrument | Any) -> None:
        """Register an instrument (see :class:`Instrument`). Call on the loop thread."""
        self._instruments = [*self._instruments, instrument]

    def remove_instrument(self, instrument: Instrument | Any) -> None:
        """Unregister an instrument; no-op if it is not registered."""
        self._instruments = [i for i in self._instruments if i is not instrument]

    def _emit(self, event: Event) -> None:
        for inst in self._instruments:
            try:
                method = getattr(inst, event.hook, None)
                if method is not None:
                    method(event)
            except Exception:
                log.exception("instrument %r raised on %s; removing it", inst, event.hook)
                self.remove_instrument(inst)

    # -- introspection ---------------------------------------------------------------------------

    def processes(self) -> list[Pid]:
        """Pids of every live process (a copy; safe from any thread)."""
        return [p.pid for p in list(self._procs.values())]

    def iter_processes(self) -> Iterator[Process]:
        """Every live :class:`Process` (over a copy; safe from any thread)."""
        return iter(list(self._procs.values()))

    def process_count(self) -> int:
        """How many processes are alive."""
        return len(self._procs)

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
_SWEPT_TIMEOUT = 1.0
"""Call timeouts of at least this many seconds are enforced by the sweeper."""
_SWEEP_EVERY = 0.05
"""Sweeper period: such timeouts fire up to this late."""
_monotonic = time.monotonic


def _call_timeout(fut: asyncio.Future[Any], dest: object, request: object, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(dest, request, timeout))

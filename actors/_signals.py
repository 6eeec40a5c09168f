"""Links, monitors and exit signals: how one process's death reaches others.

Signals are queued and processed iteratively (a chain of 100,000 linked
processes dying does not recurse). Everything here runs on the node's loop
thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ._crash import build_report, exit_log_text
from ._errors import NoProcess, ServerDied
from ._events import Demonitored, Exited, Linked, Monitored, Unlinked
from ._messages import From
from ._node_state import NodeState
from ._process import Process
from ._types import KILL, KILLED, NOPROC, NORMAL, Down, Exit, Pid, Ref, is_normal_shutdown

log = logging.getLogger("actors")


class Signals(NodeState):
    """The node's exit-signal machinery (a base of :class:`~actors.Node`)."""

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
        if isinstance(reason, BaseException):
            self.crashes_total += 1
        if self._instruments:
            report = None
            if self.crash_reports and not is_normal_shutdown(reason):
                try:
                    report = build_report(self, proc, reason, own)
                except Exception:  # never let a report break the exit
                    log.exception("could not build the crash report of %s", pid)
            self._emit(Exited(pid, reason, time.time(), proc.name, proc.label, report))

"""The agent's clock (agent thread, and one callback on the host loop): the
host's 10 Hz tick, which does the agent's periodic work (a step of
sampling, late drains, fresh-spawn re-checks) on the host's thread or hands
the agent the GIL for it, and, while an observer is attached, the watchdog
that finds the host loop blocked when those ticks stop (protocol §11; on
Linux a timerfd the tick pushes back, agent/_alarm.py). A mixin of
:class:`agent._agent.Agent`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import actors

from . import messages as M

if TYPE_CHECKING:
    from ._alarm import Alarm
    from ._collector import Collector
    from ._session import Session
    from ._source import Source

log = logging.getLogger("agent")


class Clock:
    """Needs the agent's node, sessions, collector, loop and the methods below."""

    source: Source
    sessions: list[Session]
    collector: Collector
    heartbeat: float
    block_threshold: float
    sample_hz: float
    holding: bool
    _loop: asyncio.AbstractEventLoop | None
    _watchdog: asyncio.TimerHandle | None
    _next_sample: float
    _last_drain: float
    _fresh: deque[tuple[float, actors.Pid]]
    _host_tid: int | None
    _host_last: float | None
    _tick_due: float | None
    _tick_handle: asyncio.TimerHandle | None
    _block_lag: float
    _lag_max: float
    _lag_last: float
    _blocked_since: float | None
    _blocked_pid: str | None
    _stopping: bool
    _watching: bool
    _alarm: Alarm | None
    watchdog_wakes: int
    _host_tick_work: Callable[[], bool] | None

    @property
    def watch_limit(self) -> float:
        """Seconds without a tick from the host before its loop counts as blocked."""
        return self.heartbeat + self.block_threshold * 1.2

    def _publish(self, body: M.Event | dict[str, Any]) -> None:
        raise NotImplementedError

    def _drain(self) -> None:
        raise NotImplementedError

    def _flush_sessions(self) -> None:
        raise NotImplementedError

    def _sample_due(self, now: float) -> None:
        raise NotImplementedError

    def _recheck_fresh(self) -> None:
        raise NotImplementedError

    def _on_tick(self) -> None:
        """Agent loop, woken by the host's tick (:meth:`_host_tick`), which
        waits, GIL released, until :meth:`Collector.tick_done`."""
        try:
            self._periodic()
        finally:
            # one loop step later, after the loop has read its self-pipe (see _drain)
            loop = self._loop
            assert loop is not None
            loop.call_soon(self.collector.tick_done)

    def _on_watchdog(self) -> None:
        """Agent loop, while an observer is attached: if no tick has come from
        the host for ``watch_limit`` (``heartbeat`` + 1.2 x ``block_threshold``;
        a heartbeat, once it is known blocked), the host loop is blocked:
        report it, and sample and drain on our own clock until its ticks come
        back. Otherwise look again when the next tick would be overdue. The
        host's ticks do not re-arm the timer (no foreign thread touches this
        loop's timers); the agent's thread wakes for it about five times a
        second, and not at all with nobody attached: a thread that wakes on
        its own forces a busy host to give up the GIL (see
        :mod:`agent._collector`), and a block is reported to nobody."""
        self._watchdog = None
        self.watchdog_wakes += 1
        alarm = self._alarm
        if alarm is not None:
            alarm.clear()
        if not self._watching:
            self._blocked_since = self._blocked_pid = None
            return  # no timer until the next attach (Agent.sessions_changed)
        now = time.monotonic()
        last, limit = self._host_last, self.watch_limit
        if self._blocked_since is None and last is not None and now - last < limit:
            self._arm_watchdog(last + limit - now)
            return
        self._arm_watchdog(self.heartbeat)
        self._periodic()

    def _arm_watchdog(self, delay: float) -> None:
        """Agent loop: the watchdog looks ``delay`` from now: on the Linux
        alarm (agent/_alarm.py: the host's ticks push it back, the agent's
        thread does not wake while they come), else on a timer of this loop."""
        alarm = self._alarm
        if alarm is not None:
            alarm.arm(delay)
            return
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = self._loop
        assert loop is not None
        self._watchdog = loop.call_later(delay, self._on_watchdog)

    def _periodic(self) -> None:
        """Sampling, late drains, fresh-spawn re-checks, and the blocked-loop check."""
        now = time.monotonic()
        self.holding = True
        try:
            self._tick_work(now)
            self._check_blocked(now)
        finally:
            self.holding = False
            self._flush_sessions()

    def _check_blocked(self, now: float) -> None:
        """A tick overdue by more than ``block_threshold`` means the host loop is
        blocked right now; the first tick after it, that it is free again."""
        last = self._host_last
        if last is None or (self._blocked_since is None and not self.source.loop.is_running()):
            return  # no host loop running (between two asyncio.run calls, say): nothing is blocked
        overdue = now - last - self.heartbeat
        if self._blocked_since is None:
            if overdue > self.block_threshold:
                self._blocked_since = last + self.heartbeat
                self._block_lag = 0.0
                self._report_blocked(overdue)
        elif last >= self._blocked_since:
            unblocked: M.LoopUnblockedEvent = {
                "ev": "loop_unblocked",
                "pid": self._blocked_pid,
                "blocked_ms": round(max(self._block_lag, overdue) * 1000, 1),
                "time": time.time(),
            }
            self._publish(unblocked)
            self._blocked_since = None
            self._blocked_pid = None

    def _tick_work(self, now: float) -> None:
        self._sample_due(now)
        if self.collector.buf and now - self._last_drain >= self.heartbeat:
            # nobody attached (no wake-ups), or the host loop is blocked and
            # cannot run its hand-off: drain on our own clock
            self._drain()
        elif any(s.ready for s in self.sessions):
            self.source.recheck()

    def _host_tick(self) -> None:
        """Runs on the host loop every ``heartbeat``: how late was it? Then it
        wakes the agent's periodic work (sampling, the blocked-loop check) and
        hands it the GIL for a moment (bounded like every hand-off)."""
        now = time.monotonic()
        due = self._tick_due
        if due is not None:
            lag = max(0.0, now - due)
            self._lag_last = lag
            if lag > self._lag_max:
                self._lag_max = lag
            if lag > self._block_lag:
                self._block_lag = lag  # the late tick after a block: how long it was
        self._host_last = now
        if self._stopping:
            return
        self._tick_due = now + self.heartbeat
        self._tick_handle = asyncio.get_running_loop().call_later(self.heartbeat, self._host_tick)
        alarm = self._alarm
        if alarm is not None and self._watching:
            alarm.arm(self.watch_limit)  # the watchdog's deadline pushed back: one system call, GIL held
        if not self._watching and not self.collector.buf and self._blocked_since is None:
            # nobody attached and nothing queued: no work, no lock, no wake-up;
            # a block is only logged, once the loop runs again
            if due is not None and now - due > self.block_threshold:
                log.warning("agent: host event loop was blocked for %.0f ms", (now - due) * 1000)
            return
        work = self._host_tick_work
        if work is not None and work():
            return  # done on this thread (agent/_host_drain.py)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._on_tick)
            except RuntimeError:  # the agent's loop is closed: it is stopping
                return
            self.collector.tick_handoff()

    def _report_blocked(self, waited: float) -> None:
        task = None
        try:
            task = asyncio.current_task(self.source.loop)
        except Exception:
            pass
        try:
            pid, name = self.source.owner(task)
        except Exception:
            pid = name = None
        stack: list[M.StackEntry] = []
        frame = sys._current_frames().get(self._host_tid) if self._host_tid is not None else None
        while frame is not None and len(stack) < 40:
            code = frame.f_code
            stack.append({"function": code.co_qualname, "file": code.co_filename, "line": frame.f_lineno})
            frame = frame.f_back
        stack.reverse()
        self._blocked_pid = pid
        blocked: M.LoopBlockedEvent = {
            "ev": "loop_blocked",
            "pid": pid,
            "name": name,
            "blocked_ms": round(waited * 1000, 1),
            "stack": stack,
            "time": time.time(),
        }
        self._publish(blocked)
        log.warning("agent: host event loop blocked for %.0f ms (process %s %s)", waited * 1000, pid, name or "")

"""The host-side half of the agent: an instrument that only queues.

Runs on the actor system's event loop, synchronously, for every lifecycle
event. Its whole cost is a deque append and a flag test; once per batch,
while an observer is attached, it schedules a hand-off to the agent's thread.
It never formats or serializes. If the agent falls behind by more than
``limit`` events, further events are counted as dropped (the agent then
announces a gap and resyncs its observers).

The GIL hand-off. A host loop that is busy (always something ready to run)
releases the GIL for a moment at every loop iteration and takes it straight
back; CPython's GIL then rarely lets another thread in, and the agent's thread
can starve for hundreds of milliseconds (measured: 100-350 ms with four
ping-pong pairs). So once per batch of events the collector schedules :meth:`handoff` on the
host loop, ``handoff_delay`` later: it wakes the agent's thread and waits,
GIL released, until the agent has drained and written that batch, at most
``handoff_timeout`` seconds. On an idle host the wait costs nothing; on a
saturated host it costs the host the agent's work for that batch (which,
sharing one GIL, it pays anyway) and bounds the event latency. Whatever the
agent's state, the waits never add up to more than ``handoff_budget`` (5%)
of any ``handoff_window`` (1 s).

Since issue 19 the hand-off first tries to do the batch's work on the host's
own thread (``host_work``, agent/_host_drain.py): when the agent's thread is
parked in ``select``, the host encodes and writes the batch itself and
nothing waits; the wait below is the fallback when the agent's thread is busy.

Waiting for the GIL is not free either: a thread waiting for it is woken at
every release (a futex wake paid by the releasing host, each loop iteration).
So the agent must not want the GIL while the host runs: it is woken only by
the hand-off, right before the host releases the GIL, and it ends the
hand-off only when nothing is left for it to do but sleep (see
``Agent._drain``). Woken at the first event instead, the agent's thread made
~7,500 context switches a second on the benchmark and the host lost ~4% more.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import actors


class Collector(actors.Instrument):
    """Queues events for the agent thread. Safe to read from the agent thread."""

    def __init__(
        self,
        wake: Callable[[], None],
        *,
        limit: int = 100_000,
        trace_rate: float = 200.0,
        host_loop: asyncio.AbstractEventLoop | None = None,
        handoff_timeout: float = 0.002,
        handoff_delay: float = 0.002,
        busy_delay: float = 0.005,
        handoff_budget: float = 0.05,
        handoff_window: float = 1.0,
    ) -> None:
        self.buf: deque[Any] = deque()
        self.limit = limit
        self.dropped = 0
        self.accepted = 0
        self.trace_rate = trace_rate
        self.trace_dropped = 0
        self._trace_window: dict[actors.Pid, list[float]] = {}
        self._wake = wake
        self.wake_pending = False
        self.host_loop = host_loop
        self.handoff_timeout = handoff_timeout
        self.handoff_delay = handoff_delay
        self.busy_delay = busy_delay
        """The hand-off's delay for a batch that starts less than ``busy_delay``
        after the previous hand-off (events keep coming: a storm): a bigger
        batch per hand-off and per write to the observers (each write costs
        the host ~40 µs of system time on loopback, and wakes the observer),
        at ~3 ms more latency; a lone event, or the first of a burst, still
        goes after ``handoff_delay``."""
        self._last_handoff = -1.0
        self.handoff_enabled = False
        """True while an observer is attached: with nobody to deliver to, no hand-off."""
        self.batches = 0
        """Batches the host has woken the agent for (host thread writes)."""
        self.drained = 0
        """Batches the agent has drained and flushed (agent thread writes)."""
        self.handoffs = 0
        self.handoff_waits = 0
        self.handoff_retries = 0
        self.handoff_skipped = 0
        self.handoff_wait_s = 0.0
        self.handoff_budget = handoff_budget
        """The share of each window the host may spend waiting in hand-offs."""
        self.handoff_window = handoff_window
        """The budget holds for every window of this many seconds. A 0.1 s
        window spread an overloaded agent's share over the second, but
        bursts (a chaos run killing every 10 ms) then went over it and their
        events came late: the random-victim chaos tests, under load, carried
        out fewer kills."""
        self._window_start = 0.0
        self._window_spent = 0.0
        self._cond = threading.Condition()
        self._ticks = 0
        self._ticks_done = 0
        self._woken = 0
        """The latest batch the agent was woken for (host thread)."""
        self._lazy = False
        """The pending hand-off was scheduled by :meth:`put_lazy` (later than usual)."""
        self.host_work: Callable[[int], bool] | None = None
        """Drains and writes a batch on the host's own thread when the agent's
        thread is parked (agent/_host_drain.py); True if it did. Tried first
        at each hand-off; the wait below is the fallback."""
        self.host_drains = 0
        self.host_ticks = 0
        """Heartbeat ticks whose work ran on the host's thread."""
        """Batches drained and written on the host's thread."""

    def put(self, event: Any) -> None:
        buf = self.buf
        if len(buf) >= self.limit:
            self.dropped += 1
            return
        buf.append(event)
        self.accepted += 1
        if not self.wake_pending:
            self.wake_pending = True
            self.batches += 1
            self._lazy = False
            loop = self.host_loop
            if self.handoff_enabled and loop is not None:
                # wake the agent and hand it the GIL a little later, from the
                # host loop (see the module docstring), so that a burst of
                # events shares one hand-off. With nobody attached there is no
                # wake-up at all: the agent drains on its own clock.
                loop.call_later(self._delay(loop), self.handoff, self.batches)
        elif self._lazy:
            # a lazy hand-off is pending: this event should not wait for it
            self._lazy = False
            loop = self.host_loop
            if self.handoff_enabled and loop is not None:
                loop.call_later(self._delay(loop), self.handoff, self.batches)

    def _delay(self, loop: asyncio.AbstractEventLoop) -> float:
        busy = loop.time() - self._last_handoff < self.busy_delay
        return self.busy_delay if busy else self.handoff_delay

    def put_lazy(self, event: Any, delay: float) -> None:
        """Like :meth:`put`, for an event observers need not see at once (a
        task started or ended): the hand-off it schedules comes ``delay``
        later, so that a stream of them shares fewer hand-offs (each costs
        the host a GIL hand-over). A :meth:`put` meanwhile hands off as usual."""
        buf = self.buf
        if len(buf) >= self.limit:
            self.dropped += 1
            return
        buf.append(event)
        self.accepted += 1
        if not self.wake_pending:
            self.wake_pending = True
            self.batches += 1
            self._lazy = True
            if self.handoff_enabled and self.host_loop is not None:
                self.host_loop.call_later(delay, self.handoff, self.batches)

    def handoff(self, batch: int) -> None:
        """Host loop: let the agent's thread run until it has flushed ``batch``
        (bounded by ``handoff_timeout``; see the module docstring)."""
        self.handoffs += 1
        loop = self.host_loop
        if loop is not None:
            self._last_handoff = loop.time()
        if self.drained >= batch:
            return
        work = self.host_work
        if work is not None and work(batch):
            return
        if self._woken < batch:
            # wake the agent only now, right before releasing the GIL to it:
            # woken earlier, its thread would wait for the GIL, and a thread
            # waiting for the GIL is woken at every release of it (each
            # iteration of a busy host loop), which cost the host ~4%
            self._woken = batch
            try:
                self._wake()
            except RuntimeError:  # the agent's loop is closed: it is stopping
                return
        now = time.monotonic()
        left = self._budget_left(now)
        if left <= 0:
            # the host never waits for the agent more than handoff_budget of
            # each window, whatever state the agent is in. The agent is woken
            # all the same: it then takes the GIL when the host loop lets it
            # go (later, and at the host's expense), but events stay timely
            # (not woken, they waited for its next tick: a chaos run on a
            # loaded machine then aimed at processes already dead)
            self.handoff_skipped += 1
            return
        if self.handoff_timeout <= 0:
            return
        self.handoff_waits += 1
        done = self._wait(lambda: self.drained >= batch, now, left)
        if not done and self.handoff_enabled and self.host_loop is not None:
            # the agent did not get to run in time: offer again shortly (until
            # it drains, no new batch would schedule a hand-off)
            self.handoff_retries += 1
            self.host_loop.call_later(self.handoff_delay, self.handoff, batch)

    def _budget_left(self, now: float) -> float:
        """Seconds the host may still wait in hand-offs in the current window."""
        if now - self._window_start >= self.handoff_window:
            self._window_start, self._window_spent = now, 0.0
        return self.handoff_budget * self.handoff_window - self._window_spent

    def _wait(self, done: Callable[[], bool], since: float, left: float) -> bool:
        """Wait, GIL released, until ``done()`` (at most ``handoff_timeout`` and
        what is ``left`` of the budget), and count the time against it."""
        with self._cond:
            ok = self._cond.wait_for(done, min(self.handoff_timeout, left))
        spent = time.monotonic() - since
        self._window_spent += spent
        self.handoff_wait_s += spent
        return ok

    def tick_handoff(self) -> None:
        """Host loop, every heartbeat: wait (GIL released) until the agent has
        done its periodic work for this tick, within the same bounds as
        :meth:`handoff`."""
        self._ticks += 1
        target = self._ticks
        if self.handoff_timeout <= 0:
            return
        now = time.monotonic()
        left = self._budget_left(now)
        if left <= 0:
            return
        self._wait(lambda: self._ticks_done >= target, now, left)

    def tick_done(self) -> None:
        """Agent thread: the periodic work of the latest tick is done."""
        with self._cond:
            self._ticks_done = self._ticks
            self._cond.notify_all()

    def flushed(self, batch: int) -> None:
        """Agent thread: everything up to ``batch`` is drained and written."""
        with self._cond:
            if batch > self.drained:
                self.drained = batch
            self._cond.notify_all()

    def flushed_here(self, batch: int) -> None:
        """Host thread (a host-side drain): as :meth:`flushed`, without waking
        anyone: the only thread that waits on ``_cond`` is the host's, in a
        hand-off, and it is running this (a ``Condition.notify_all`` is ten
        Python calls, at every batch of a storm)."""
        if batch > self.drained:
            self.drained = batch

    spawned = exited = restarted = linked = unlinked = put
    monitored = demonitored = registered = suspended = resumed = supervisor_gave_up = put

    def _trace_ok(self, pid: actors.Pid) -> bool:
        """Rate limit per traced pid: at most ``trace_rate`` messages in each
        one-second window; the rest are counted in ``trace_dropped``."""
        now = time.monotonic()
        w = self._trace_window.get(pid)
        if w is None or now - w[0] >= 1.0:
            self._trace_window[pid] = [now, 1.0]
            return True
        if w[1] >= self.trace_rate:
            self.trace_dropped += 1
            return False
        w[1] += 1
        return True

    def message_sent(self, event: actors.MessageSent) -> None:
        if self._trace_ok(event.sender):
            self.put(event)

    def message_received(self, event: actors.MessageReceived) -> None:
        if self._trace_ok(event.pid):
            self.put(event)

    def call_sent(self, event: actors.CallSent | actors.CallReturned | actors.CallReplied) -> None:
        if self._trace_ok(event.pid):
            self.put(event)

    call_returned = call_replied = call_sent

    def forget_trace(self, pid: actors.Pid) -> None:
        self._trace_window.pop(pid, None)

"""The host-side half of the agent: an instrument that only queues.

Runs on the actor system's event loop, synchronously, for every lifecycle
event. Its whole cost is a deque append and a flag test; once per batch it
wakes the agent's thread. It never formats, serializes or waits. If the
agent falls behind by more than ``limit`` events, further events are counted
as dropped (the agent then announces a gap and resyncs its observers).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import actors


class Collector(actors.Instrument):
    """Queues events for the agent thread. Safe to read from the agent thread."""

    def __init__(self, wake: Callable[[], None], *, limit: int = 100_000, trace_rate: float = 200.0) -> None:
        self.buf: deque[Any] = deque()
        self.limit = limit
        self.dropped = 0
        self.accepted = 0
        self.trace_rate = trace_rate
        self.trace_dropped = 0
        self._trace_window: dict[actors.Pid, list[float]] = {}
        self._wake = wake
        self.wake_pending = False

    def put(self, event: Any) -> None:
        buf = self.buf
        if len(buf) >= self.limit:
            self.dropped += 1
            return
        buf.append(event)
        self.accepted += 1
        if not self.wake_pending:
            self.wake_pending = True
            try:
                self._wake()
            except RuntimeError:  # the agent's loop is closed: it is stopping
                pass

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

    def forget_trace(self, pid: actors.Pid) -> None:
        self._trace_window.pop(pid, None)

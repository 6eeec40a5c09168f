"""The events' path on the agent's side: the collector's queue drained,
each event encoded by the source, stamped and queued for every session, and
the sessions' queues written (agent thread, or the host's in a host-side
drain: agent/_host_drain.py). A mixin of :class:`agent._agent.Agent`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from . import protocol as P
from ._outbox import PLAIN_KINDS, PLAIN_SIZE, event_size
from ._redact import Redactor
from ._trace import TRACE_EVENTS, Tracer

if TYPE_CHECKING:
    from ._collector import Collector
    from ._session import Session
    from ._source import Source

log = logging.getLogger("agent")

WRITE_HIGH_WATER = 256 * 1024
"""Transport write-buffer high-water mark per session: writers wait on drain() past it."""


class Drains:
    """Needs the agent's collector, sessions, source, tracer and counters."""

    source: Source
    sessions: list[Session]
    collector: Collector
    tracer: Tracer
    trace_redactor: Redactor
    seq: int
    crashes: int
    restarts: int
    events_dropped: int
    holding: bool
    _loop: asyncio.AbstractEventLoop | None
    _cache: dict[int, list[Any]]
    _last_drain: float

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._last_drain = time.monotonic()
        c = self.collector
        batch = c.batches
        c.wake_pending = False
        outer = self.holding  # inside a tick's work, which writes at its end
        self.holding = True
        try:
            self._drain_some()
        finally:
            self.holding = outer
            if not outer:
                self._flush_sessions()
        loop = asyncio.get_running_loop()
        if c.buf:
            loop.call_soon(self._drain)
        else:
            # the host's hand-off can end, one loop step later: after the
            # session writers this drain woke, if any, and after the loop has
            # read its self-pipe (the wake-up's byte). A thread that releases
            # the GIL once the host has resumed (that read does) must wait for
            # it until the next hand-off, woken at every release of it by the
            # busy host loop (~13,000 a second, measured with strace), which
            # costs the host a futex wake each time.
            loop.call_soon(c.flushed, batch)
        dropped = c.dropped
        if dropped:
            c.dropped -= dropped
            self.events_dropped += dropped
            for s in self.sessions:
                s.dropped += dropped
                s.request_resync()

    def _drain_some(self) -> None:
        """Encode up to 5,000 of the collector's events and queue them on the sessions."""
        buf = self.collector.buf
        source = self.source
        n = 0
        if not any(s.ready for s in self.sessions):
            # nobody attached: nothing to encode, only the counters to keep
            while buf:
                source.account(buf.popleft())
            self._cache.clear()
        tracer = self.tracer
        while buf and n < 5000:
            ev = buf.popleft()
            n += 1
            if tracer.by_pid and type(ev) in TRACE_EVENTS and tracer.feed(ev):
                continue
            try:
                d = source.encode(ev)
            except Exception:
                log.exception("agent: could not encode %s", type(ev).__name__)
                continue
            if d is not None:
                self._publish(d)
        if any(s.ready for s in self.sessions):
            source.recheck()
        if tracer.traces:
            tracer.flush()

    def _flush_sessions(self) -> None:
        """End of a drain or a tick's work (``holding`` was set: what they
        queued woke no writer task): each session writes its queue now, or
        wakes its writer task (see :meth:`Session.flush_now`)."""
        for s in self.sessions:
            try:
                s.flush_now(WRITE_HIGH_WATER)
            except Exception:
                log.exception("agent session %s: write failed", s.id)
                s.wake_writer()

    def _publish(self, body: P.Event | dict[str, Any]) -> None:
        """Stamp an event body (:data:`agent.messages.EVENTS`) as a frame and queue it for every session."""
        d: dict[str, Any] = body  # type: ignore[assignment]  # the frame is the body, stamped in place
        self.seq += 1
        d["t"] = "ev"
        d["seq"] = self.seq
        kind = d["ev"]
        if kind == "exit":
            if d["reason_kind"] == "exception":
                self.crashes += 1
            for s in self.sessions:
                s.forget(d["pid"])
        elif kind == "restart":
            self.restarts += 1
        size = PLAIN_SIZE if kind in PLAIN_KINDS else event_size(d)  # once for every session
        for s in self.sessions:
            s.push_event(d, size)

    def _encode_value(self, value: Any) -> Any:
        return self.trace_redactor.encode(value).data

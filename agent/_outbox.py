"""One session's outbound queues and their frames (agent loop; the host's
thread in a host-side drain or a quick command's reply, agent/_host_drain.py,
both while the agent's thread is parked).

Memory bound per session (the agent never buffers more for a slow or stalled
observer): ``event_limit`` lifecycle events and at most ``event_bytes_limit``
bytes of them, one coalesced sample row per live process, a few times
``max_inflight`` pending replies, and the transport's write buffer (writes
wait on ``drain()``, with a high-water mark of ``WRITE_HIGH_WATER``). When
the event queue overflows, the backlog is dropped, counted, and the session
is resynced: a ``gap`` message with the count, then a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import protocol as P

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger("agent")

_OWN_FRAMES = frozenset({"ev", "samples", "snapshot_chunk"})
"""Frames built only from the agent's own numbers and redacted values (see ``P.encode_frame``'s ``fast``)."""
BATCH_EVENTS = 256
"""Events per ``batch`` frame at most (and per write burst without batches)."""


class Outbox:
    """The queues of one session (a base of :class:`agent._session.Session`)."""

    def __init__(self, agent: Agent, writer: asyncio.StreamWriter, session_id: str) -> None:
        self.agent = agent
        self.writer = writer
        self.id = session_id
        self.events: deque[dict[str, Any]] = deque()
        self._sizes: deque[int] = deque()
        """Each queued event's :func:`event_size`, worked out once (when it was published)."""
        self.event_bytes = 0
        self.peak_events = 0
        """The most events this session ever had queued (for tests and benchmarks)."""
        self.samples: dict[str, list[Any]] = {}
        self.node_stats: P.NodeStats | None = None
        self.replies: deque[P.ReplyMsg] = deque()
        self.dropped = 0
        self.resync = False
        self.ready = False
        self._wake = asyncio.Event()
        self._snapshotting = False
        self.bytes_out = 0
        self.writes = 0
        """Writes to the transport (benchmarks: each costs the host a system call)."""
        self.batch = False
        """The observer reads ``batch`` frames (negotiated in the handshake): events go several to a frame."""

    def queued_items(self) -> int:
        return len(self.events) + len(self.samples) + len(self.replies)

    def push_event(self, msg: dict[str, Any], size: int | None = None) -> None:
        """Queue an event; ``size``: its :func:`event_size` if the caller has it."""
        if not self.ready:
            return
        if self.resync:
            return  # the coming snapshot reflects it
        if size is None:
            size = event_size(msg)
        if len(self.events) >= self.agent.event_limit or self.event_bytes + size > self.agent.event_bytes_limit:
            self.dropped += len(self.events) + 1
            self.clear_events()
            self.resync = True
        else:
            self.events.append(msg)
            self._sizes.append(size)
            self.event_bytes += size
            if len(self.events) > self.peak_events:
                self.peak_events = len(self.events)
        if not self.agent.holding:
            self._wake.set()

    def flush_now(self, high_water: int) -> None:
        """Write the queued events and samples at once, from the agent loop's
        drain or tick, when the writer task has nothing else to do first: no
        reply waiting, no resync, the transport's buffer under ``high_water``.
        Otherwise wake the writer task.

        Why not leave it to the writer task: a task woken from the drain runs
        one agent-loop iteration later, possibly after the host's hand-off
        has ended; the poll between the two releases the GIL, which a busy
        host takes straight back, and the agent then waits for it until the
        next hand-off, woken at every release (see :mod:`agent._collector`).
        A write done here happens while the host waits in its hand-off."""
        if not self.ready or (not self.events and not self.samples and self.node_stats is None):
            return
        w = self.writer
        if (
            self.resync
            or self._snapshotting
            or self.replies
            or w.is_closing()
            or w.transport.get_write_buffer_size() >= high_water
        ):
            self.wake_writer()
            return
        out: list[bytes] = []
        while self.events:
            out += self._event_frames(BATCH_EVENTS)
        out += self._sample_frames()
        self._send(out)

    def wake_writer(self) -> None:
        self._wake.set()

    def writer_woken(self) -> bool:
        """The writer task has been woken and has not run yet."""
        return self._wake.is_set()

    def push_samples(self, rows: list[list[Any]], stats: P.NodeStats) -> None:
        if not self.ready:
            return
        samples = self.samples
        for row in rows:
            samples[row[0]] = row  # latest per process wins
        self.node_stats = stats
        if not self.agent.holding:
            self._wake.set()

    def forget(self, pid: str) -> None:
        self.samples.pop(pid, None)

    def clear_events(self) -> None:
        self.events.clear()
        self._sizes.clear()
        self.event_bytes = 0

    def request_resync(self) -> None:
        self.clear_events()
        self.resync = True
        self._wake.set()

    def reply(self, msg: P.ReplyMsg) -> None:
        self.replies.append(msg)
        self._wake.set()

    # -- frames ----------------------------------------------------------------------------------

    def _event_frames(self, limit: int) -> list[bytes]:
        """Up to ``limit`` queued events taken off the queue, as frames: one
        ``batch`` frame when the observer reads them (several events), else
        one frame each."""
        events, sizes = self.events, self._sizes
        taken: list[dict[str, Any]] = []
        size = 0
        while events and len(taken) < limit:
            taken.append(events.popleft())
            size += sizes.popleft()
        self.event_bytes -= size
        if self.batch and len(taken) > 1:
            frame: P.BatchMsg = {"t": "batch", "evs": taken}
            try:
                return [P.encode_frame(frame, fast=True)]
            except P.FrameError:  # over the frame limit: one frame each (an oversized one is dropped)
                pass
        out = []
        for msg in taken:
            data = self._frame(msg)
            if data is not None:
                out.append(data)
        return out

    def _sample_frames(self) -> list[bytes]:
        """The queued samples as frames (5,000 rows each), and the queue emptied."""
        if not self.samples and self.node_stats is None:
            return []
        rows = list(self.samples.values())
        self.samples = {}
        stats, self.node_stats = self.node_stats, None
        out = []
        for i in range(0, max(len(rows), 1), 5000):
            frame: P.SamplesMsg = {"t": "samples", "rows": rows[i : i + 5000], "node": stats if i == 0 else None}
            data = self._frame(frame)
            if data is not None:
                out.append(data)
        return out

    def _frame(self, obj: Mapping[str, Any]) -> bytes | None:
        try:
            return P.encode_frame(obj, fast=obj.get("t") in _OWN_FRAMES)
        except P.FrameError as exc:
            if obj.get("t") != "reply":
                log.warning("agent session %s: dropped an oversized %s message: %s", self.id, obj.get("t"), exc)
                return None
            return P.encode_frame(error_reply(obj["id"], P.E_FAILED, f"reply too large to send: {exc}"))

    def _send(self, frames: list[bytes]) -> None:
        if not frames:
            return
        if self.writer.is_closing():
            raise ConnectionResetError("observer went away")
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.bytes_out += len(data)
        self.writes += 1
        self.writer.write(data)

    def _write_nowait(self, obj: Mapping[str, Any]) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("observer went away")
        data = self._frame(obj)
        if data is not None:
            self._send([data])


PLAIN_KINDS = frozenset(
    {"spawn", "restart", "link", "unlink", "update", "monitor", "demonitor", "register", "suspend", "resume", "gave_up"}
)
"""Event kinds with no traceback, stack, message or report: :func:`event_size` is
``PLAIN_SIZE`` for them (the publisher skips the call: three of a kill's four events)."""
PLAIN_SIZE = 1000


def event_size(msg: dict[str, Any]) -> int:
    """A cheap, deliberately high estimate of an event's memory in bytes (a dict
    of ~10 fields with its small strings measures 550-700 bytes on CPython 3.11;
    the margin covers the allocator's overhead and the encoded frame)."""
    size = PLAIN_SIZE
    tb = msg.get("traceback")
    if tb:
        size += len(tb)
    if "stack" in msg:
        size += 120 * len(msg["stack"])
    if "message" in msg:
        size += 4096  # trace messages are encoded under a 4 KiB cap
    rep = msg.get("report")
    if rep:  # an exit's crash report: its texts, frames and redacted values
        size += 2500 + len(rep.get("traceback") or "")  # ~25 fields, ancestry, budget: ~2.5 KB of dicts
        size += 700 * sum(len(e.get("frames") or ()) for e in rep.get("exceptions") or ())
        for key in ("message", "state"):
            value = rep.get(key)
            if value:
                size += 2 * int(value.get("size") or 16384)
        size += 4600 * len(rep.get("flight") or ())  # each entry under a 2 KiB cap
    return size


def error_reply(rid: int | str, code: str, message: str) -> P.ReplyError:
    return {"t": "reply", "id": rid, "ok": False, "error": {"code": code, "message": message}}

"""One observer connection: handshake, bounded outbound queues, commands.

Memory bound per session (the agent never buffers more for a slow or stalled
observer): ``event_limit`` lifecycle events and at most ``event_bytes_limit``
bytes of them, one coalesced sample row per live process, a few times
``max_inflight`` pending replies (an observer that floods commands without
reading is disconnected), and the transport's write buffer (writes wait on ``drain()``, with a high-water mark of
``WRITE_HIGH_WATER``). When the event queue overflows, the backlog is dropped,
counted, and the session is resynced: a ``gap`` message with the count, then
a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import protocol as P
from ._preauth import HANDSHAKE_DEADLINE

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger("agent")
audit = logging.getLogger("agent.audit")

HANDSHAKE_TIMEOUT = HANDSHAKE_DEADLINE
_OWN_FRAMES = frozenset({"ev", "samples", "snapshot_chunk"})
"""Frames built only from the agent's own numbers and redacted values (see ``P.encode_frame``'s ``fast``)."""
SNAPSHOT_CHUNK = 2000
BATCH_EVENTS = 256
"""Events per ``batch`` frame at most (and per write burst without batches)."""


class SessionClosed(Exception):
    pass


class Session:
    """Serves one attached observer until it disconnects."""

    def __init__(self, agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.agent = agent
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.peer_host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        self.id = secrets.token_hex(6)
        self.role = ""
        self.commands: tuple[str, ...] = ()
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
        self.inflight = 0
        self.traced: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._snapshotting = False
        self.bytes_out = 0
        self.batch = False
        """The observer reads ``batch`` frames (negotiated in the handshake): events go several to a frame."""

    # -- queueing (agent loop) ---------------------------------------------------------------

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

    # -- connection --------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if not await self._handshake():
                return
            writer_task = asyncio.create_task(self._writer_loop())
            try:
                await self._reader_loop()
            finally:
                for t in list(self._tasks):
                    t.cancel()
                writer_task.cancel()
                try:
                    await writer_task
                except (asyncio.CancelledError, Exception):
                    pass
        except (ConnectionError, asyncio.IncompleteReadError, SessionClosed):
            pass
        except Exception:
            log.exception("agent session %s (%s) failed", self.id, self.peer)
        finally:
            self._closed = True
            self.agent._session_closed(self)
            try:
                self.writer.close()
            except Exception:
                pass

    async def _send_now(self, obj: Mapping[str, Any]) -> None:
        data = P.encode_frame(obj)
        self.bytes_out += len(data)
        self.writer.write(data)
        await self.writer.drain()

    async def _fail(self, code: str, message: str) -> None:
        try:
            err: P.ErrorMsg = {"t": "error", "code": code, "message": message}
            await asyncio.wait_for(self._send_now(err), 1.0)
        except Exception:
            pass

    async def _read_frame(self) -> dict[str, Any]:
        header = await self.reader.readexactly(P.HEADER.size)
        (n,) = P.HEADER.unpack(header)
        if n > self.agent.max_frame:
            raise P.FrameError(f"frame of {n} bytes exceeds the {self.agent.max_frame}-byte limit")
        payload = await self.reader.readexactly(n)
        return P.decode_payload(payload)

    async def _handshake(self) -> bool:
        """hello -> auth -> welcome within the pre-auth deadline; the pending slot is released either way."""
        try:
            return await self._handshake_steps()
        finally:
            self.agent.preauth.done(self.peer_host, self.writer)

    async def _handshake_steps(self) -> bool:
        agent = self.agent
        pre = agent.preauth
        nonce = secrets.token_hex(16)
        # only what the handshake needs before authentication: nothing about the host
        hello: P.HelloMsg = {
            "t": "hello",
            "protocol": P.PROTOCOL,
            "versions": list(P.SUPPORTED_VERSIONS),
            "nonce": nonce,
            "agent": pre.agent_id,
        }
        await self._send_now(hello)
        try:
            msg = await asyncio.wait_for(self._read_frame(), pre.deadline)
        except TimeoutError:
            pre.timed_out += 1
            pre.note(self.peer_host, "timed out")
            await self._fail(P.E_BAD_HANDSHAKE, "handshake timed out")
            return False
        except P.FrameError as exc:
            pre.note(self.peer_host, f"sent a bad frame ({exc.code})")
            await self._fail(exc.code, str(exc))
            return False
        version = msg.get("version")
        if msg.get("t") != "auth" or type(version) is not int or version not in P.SUPPORTED_VERSIONS:
            pre.note(self.peer_host, f"refused: protocol version {str(version)[:10]}, not {list(P.SUPPORTED_VERSIONS)}")
            await self._fail(
                P.E_BAD_HANDSHAKE,
                f"this agent speaks protocol version(s) {list(P.SUPPORTED_VERSIONS)}: upgrade the observer",
            )
            return False
        role = msg.get("role")
        client_nonce = msg.get("nonce")
        observer_id = msg.get("observer")
        token = agent.token_for(role) if isinstance(role, str) else None
        channel = P.channel_binding(self.writer.get_extra_info("ssl_object"))
        if (
            token is None
            or not isinstance(client_nonce, str)
            or not (16 <= len(client_nonce) <= 128)
            or not isinstance(observer_id, str)
            or len(observer_id) > 128
            or not P.verify(
                P.client_mac(
                    token,
                    nonce,
                    client_nonce,
                    str(role),
                    agent_id=pre.agent_id,
                    observer_id=str(observer_id),
                    channel=channel,
                ),
                msg.get("mac"),
            )
        ):
            agent.auth_failures += 1
            pre.failed += 1
            pre.note(self.peer_host, "authentication failed")
            await self._fail(P.E_AUTH_FAILED, "authentication failed")
            return False
        assert isinstance(role, str)
        if len(agent.ready_sessions()) >= agent.max_sessions:
            await self._fail(P.E_BUSY, "too many observers attached")
            return False
        self.role = role
        self.commands = tuple(c for c in P.commands_for(role) if c in agent.source.commands)
        asked = msg.get("features")
        granted = [f for f in P.FEATURES if f in asked] if isinstance(asked, list) else None
        self.batch = granted is not None and P.FEATURE_BATCH in granted
        audit.info("agent: %s attached from %s as %s (observer %.40s)", self.id, self.peer, role, observer_id)
        welcome: P.WelcomeMsg = {
            "t": "welcome",
            "version": P.VERSION,
            "role": role,
            "mac": P.server_mac(
                token, nonce, client_nonce, role, agent_id=pre.agent_id, observer_id=str(observer_id), channel=channel
            ),
            "session": self.id,
            "commands": list(self.commands),
            "sample_hz": agent.sample_hz,
            "node_kind": agent.source.kind,
            "node": agent.node_meta(),
        }
        if granted is not None:  # only to an observer that asked: an older one is served as before
            welcome["features"] = granted
        await self._send_now(welcome)
        self.ready = True
        agent.sessions_changed()
        self.resync = True  # the first thing written is a snapshot
        self._wake.set()
        return True

    async def _reader_loop(self) -> None:
        while True:
            try:
                msg = await self._read_frame()
            except P.FrameError as exc:
                audit.warning("agent: bad frame from %s (%s): %s", self.peer, self.id, exc)
                await self._fail(exc.code, str(exc))
                return
            if msg.get("t") != "cmd":
                await self._fail(P.E_BAD_FRAME, f"unexpected message type {str(msg.get('t'))[:40]!r}")
                return
            rid = msg.get("id")
            if not isinstance(rid, int | str) or isinstance(rid, bool):
                await self._fail(P.E_BAD_FRAME, "command without an id")
                return
            if self.inflight >= self.agent.max_inflight:
                if len(self.replies) > 4 * self.agent.max_inflight:
                    audit.warning("agent: %s (%s) floods commands without reading; closing", self.peer, self.id)
                    return
                self.reply(_error(rid, P.E_BUSY, "too many commands in flight"))
                continue
            self.inflight += 1
            task = asyncio.create_task(self._run_command(rid, msg.get("cmd"), msg.get("args")))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_command(self, rid: int | str, cmd: Any, args: Any) -> None:
        try:
            self.reply(await self.agent.commands.run(self, rid, cmd, args))
        except Exception as exc:  # exactly one reply, whatever happens
            log.exception("agent command %r failed", cmd)
            self.reply(_error(rid, P.E_FAILED, f"{type(exc).__name__}"))
        finally:
            self.inflight -= 1

    async def _writer_loop(self) -> None:
        try:
            await self._writer_steps()
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("agent session %s (%s): writer failed; closing", self.id, self.peer)
            self.writer.close()
            raise

    async def _writer_steps(self) -> None:
        w = self.writer
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.replies:
                await self._write(self.replies.popleft())
            if self.resync:
                await self._send_snapshot()
                continue
            # one write (one send) per burst of frames, not one per event:
            # every send releases the GIL and the agent pays a hand-over to get
            # it back from a busy host (measured: 606 sends/s cost the host ~4%)
            out: list[bytes] = []
            while self.events:
                out += self._event_frames(BATCH_EVENTS)
                if len(out) >= 256 or (self.batch and self.events):
                    self._send(out)
                    out = []
                    await w.drain()
                    while self.replies:
                        await self._write(self.replies.popleft())
                    if self.resync:
                        break
            if self.resync:
                self._send(out)
                self._wake.set()
                continue
            out += self._sample_frames()
            self._send(out)
            await w.drain()

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
            return P.encode_frame(_error(obj["id"], P.E_FAILED, f"reply too large to send: {exc}"))

    def _send(self, frames: list[bytes]) -> None:
        if not frames:
            return
        if self.writer.is_closing():
            raise ConnectionResetError("observer went away")
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        self.bytes_out += len(data)
        self.writer.write(data)

    def _write_nowait(self, obj: Mapping[str, Any]) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("observer went away")
        data = self._frame(obj)
        if data is not None:
            self._send([data])

    async def _write(self, obj: Mapping[str, Any]) -> None:
        self._write_nowait(obj)
        await self.writer.drain()

    async def _send_snapshot(self) -> None:
        """Gap (if anything was dropped), then the whole picture in chunks; the
        events queued meanwhile wait for the writer (none between the chunks)."""
        self._snapshotting = True
        try:
            await self._snapshot_frames()
        finally:
            self._snapshotting = False

    async def _snapshot_frames(self) -> None:
        agent = self.agent
        await agent.hooks_ready()  # the events that follow the snapshot are all seen
        # atomically (no await in between): what the snapshot covers, and the
        # queue reset; events queued from here on have seq > this one
        seq = agent.seq
        self.resync = False
        self.clear_events()
        self.samples = {}
        if self.dropped:
            gap: P.GapMsg = {"t": "gap", "dropped": self.dropped}
            await self._write(gap)
            self.dropped = 0
        procs = agent.node_processes()
        begin: P.SnapshotBeginMsg = {"t": "snapshot_begin", "seq": seq, "count": len(procs), "node": agent.node_meta()}
        await self._write(begin)
        for i in range(0, len(procs), SNAPSHOT_CHUNK):
            chunk: P.SnapshotChunkMsg = {
                "t": "snapshot_chunk",
                "seq": seq,
                "procs": agent.node_records(procs[i : i + SNAPSHOT_CHUNK]),  # type: ignore[typeddict-item]
            }
            await self._write(chunk)
            while self.replies:
                await self._write(self.replies.popleft())
        end: P.SnapshotEndMsg = {"t": "snapshot_end", "seq": seq, "names": agent.names()}
        await self._write(end)


def event_size(msg: dict[str, Any]) -> int:
    """A cheap, deliberately high estimate of an event's memory in bytes (a dict
    of ~10 fields with its small strings measures 550-700 bytes on CPython 3.11;
    the margin covers the allocator's overhead and the encoded frame)."""
    size = 1000
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


def _error(rid: int | str, code: str, message: str) -> P.ReplyError:
    return {"t": "reply", "id": rid, "ok": False, "error": {"code": code, "message": message}}

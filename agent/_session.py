"""One observer connection (agent loop): the handshake (agent/_handshake.py),
then a reader of commands and a writer of what the session's outbox
(agent/_outbox.py, where its memory bounds are) has queued, snapshots first.
An observer that floods commands without reading is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import protocol as P
from ._handshake import handshake_steps
from ._outbox import BATCH_EVENTS, Outbox, error_reply
from ._preauth import HANDSHAKE_DEADLINE

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger("agent")
audit = logging.getLogger("agent.audit")

HANDSHAKE_TIMEOUT = HANDSHAKE_DEADLINE
SNAPSHOT_CHUNK = 2000
SNAPSHOT_PIECE = 100
"""Records built at a time within a chunk (see :meth:`Session._chunk_frame`):
each is a dict and two lists tracked by the garbage collector, and 100 of
them stay well under its first generation's threshold (700)."""


class SessionClosed(Exception):
    pass


class Session(Outbox):
    """Serves one attached observer until it disconnects."""

    def __init__(self, agent: Agent, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(agent, writer, secrets.token_hex(6))
        self.reader = reader
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.peer_host = str(peer[0]) if isinstance(peer, tuple) and peer else str(peer)
        self.role = ""
        self.commands: tuple[str, ...] = ()
        self.inflight = 0
        self.traced: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

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
            return await handshake_steps(self)
        finally:
            self.agent.preauth.done(self.peer_host, self.writer)

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
                self.reply(error_reply(rid, P.E_BUSY, "too many commands in flight"))
                continue
            self.inflight += 1
            if self._run_quick(rid, msg.get("cmd"), msg.get("args")):
                continue
            task = asyncio.create_task(self._run_command(rid, msg.get("cmd"), msg.get("args")))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _run_quick(self, rid: int | str, cmd: Any, args: Any) -> bool:
        """A quick command taken care of at once, with no task (agent/_quick.py:
        the host's loop answers it); False: not one, run it as a task."""
        try:
            res = self.agent.commands.run_quick(self, rid, cmd, args)
        except Exception as exc:  # exactly one reply, whatever happens
            log.exception("agent command %r failed", cmd)
            res = error_reply(rid, P.E_FAILED, f"{type(exc).__name__}")
        if isinstance(res, bool):
            return res  # True: handed to the host's loop, which gives the slot back
        self.inflight -= 1
        self.reply(res)
        return True

    async def _run_command(self, rid: int | str, cmd: Any, args: Any) -> None:
        try:
            self.reply(await self.agent.commands.run(self, rid, cmd, args))
        except Exception as exc:  # exactly one reply, whatever happens
            log.exception("agent command %r failed", cmd)
            self.reply(error_reply(rid, P.E_FAILED, f"{type(exc).__name__}"))
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
            data = self._chunk_frame(seq, procs[i : i + SNAPSHOT_CHUNK])
            if data is not None:
                self._send([data])
            await self.writer.drain()
            while self.replies:
                await self._write(self.replies.popleft())
            # one turn of the agent's loop between chunks (its drain only waits
            # when the socket is full): other observers' handshakes, commands
            # and the watchdog are not held up for a whole snapshot. Nothing
            # changes for this session: its events wait for the end
            # (``_snapshotting``), as when the drain waits
            await asyncio.sleep(0)
        end: P.SnapshotEndMsg = {"t": "snapshot_end", "seq": seq, "names": agent.names()}
        await self._write(end)

    def _chunk_frame(self, seq: int, units: list[Any]) -> bytes | None:
        """A ``snapshot_chunk`` frame of ``units``' records, built and encoded
        SNAPSHOT_PIECE records at a time and the pieces' JSON joined: the same
        bytes as the chunk encoded whole, but never more than a piece's
        records alive at once. A whole chunk's records (a dict and two lists
        each, all tracked by the garbage collector) outlived the collections
        that building them set off and were promoted to the oldest
        generation, which then soon got a full collection: the node's whole
        heap walked with the GIL held (~0.4 s at 50,000 processes, seconds on
        a loaded machine), in the way of the host's loop. None: over the
        frame limit (dropped, as any oversized frame)."""
        agent = self.agent
        head = f'{{"t":"snapshot_chunk","seq":{seq},"procs":['.encode()
        skip = len(head)
        parts: list[bytes | memoryview] = [b"", head]
        size = skip + 2
        for k in range(0, len(units), SNAPSHOT_PIECE):
            piece: P.SnapshotChunkMsg = {
                "t": "snapshot_chunk",
                "seq": seq,
                "procs": agent.node_records(units[k : k + SNAPSHOT_PIECE]),  # type: ignore[typeddict-item]
            }
            if not piece["procs"]:
                continue
            frame = P.encode_frame(piece, fast=True)
            if not (frame.startswith(head, P.HEADER.size) and frame.endswith(b"]}")):  # pragma: no cover
                raise ValueError("unexpected snapshot chunk encoding")  # (both encoders write it so)
            if len(parts) > 2:
                parts.append(b",")
                size += 1
            body = memoryview(frame)[P.HEADER.size + skip : -2]
            parts.append(body)
            size += len(body)
        if size > P.MAX_OUTBOUND_FRAME:
            log.warning("agent session %s: dropped an oversized snapshot_chunk of %d bytes", self.id, size)
            return None
        parts[0] = P.HEADER.pack(size)
        parts.append(b"]}")
        return b"".join(parts)

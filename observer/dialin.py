"""Agents that dial in: ``observer serve --listen-agents HOST:PORT``.

For nodes behind NAT or in containers the agent opens the connection
(:mod:`agent._dial`); only the set-up is reversed. :class:`DialInListener`
accepts on the attach manager's loop, optionally upgrades to TLS (mutual
TLS when a client CA is given), reads the agent's ``dial`` frame (its node
name), picks that node's token (``--node-token-file`` lines ``NAME TOKEN``, or
the ``*`` token) and runs the ordinary handshake as the authenticating side
(:meth:`agent.client.AgentClient.over`): the agent must prove it holds the
token too. The authenticated client is handed to the node's
:class:`DialInAttachment` (created on first contact), which from then on is
the same :class:`observer.attach.Attachment` as any other: snapshot, deltas,
commands, down with its last-known tree when the connection drops, a fresh
snapshot when the agent dials again (the agent does the jittered backoff).

Every refused connection (TLS failure, bad ``dial`` frame, unknown node,
wrong token) is logged and written to the audit log (action ``dial_in``).

Threading rules
    The listener's callbacks run on the attach loop thread; :meth:`start` and
    :meth:`stop` block on it and must be called from another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from agent import protocol as P
from agent.client import AgentClient, AgentError

from .attach import AttachManager, Attachment, _call, parse_address
from .cluster import NAME_RE
from .store import HistoryStore

__all__ = ["DialInAttachment", "DialInListener", "server_ssl_context"]

log = logging.getLogger("observer.dialin")

HANDSHAKE_TIMEOUT = 10.0
MAX_PENDING = 64
"""Connections still in TLS or the handshake at once; more are closed at once (and counted)."""


def server_ssl_context(cert: str, key: str | None, ca: str | None = None) -> ssl.SSLContext:
    """The listener's TLS context; ``ca`` requires agents to present a
    certificate signed by it (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(ca)
    return ctx


class DialInAttachment(Attachment):
    """An attachment whose connections are handed over by the listener."""

    gated = False  # (the agent dialled in: its connection is not made by us, nor held back)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._incoming: asyncio.Queue[AgentClient] | None = None
        self.peer: str | None = None

    def _queue(self) -> asyncio.Queue[AgentClient]:
        if self._incoming is None:
            self._incoming = asyncio.Queue()
        return self._incoming

    async def _connect(self) -> AgentClient:
        return await self._queue().get()

    async def _backoff(self, delay: float) -> None:
        return None  # the agent backs off before dialling again

    def hand_over(self, client: AgentClient, peer: str) -> None:
        """A freshly authenticated client (loop thread). A session still open
        (the agent dialled again before we saw the drop) is closed first."""
        old = self.client
        if old is not None:
            old.writer.close()
        q = self._queue()
        while not q.empty():  # an older hand-over nobody picked up yet
            stale = q.get_nowait()
            stale.writer.close()
        self.peer = peer
        q.put_nowait(client)

    def info(self) -> dict[str, Any]:
        return super().info() | {"direction": "dial-in", "address": self.peer or self.address}


class DialInListener:
    """Accepts agents that dial in and hands them to their attachments."""

    def __init__(
        self,
        manager: AttachManager,
        address: str,
        tokens: dict[str, str],
        *,
        role: str = P.ROLE_READ,
        ssl_context: ssl.SSLContext | None = None,
        store: HistoryStore | None = None,
    ) -> None:
        self.manager = manager
        self.host, self.port = parse_address(address)
        self.tokens = tokens
        self.role = role
        self.ssl_context = ssl_context
        self.store = store
        self.refusals: Any = None
        """An :class:`observer.refusals.RefusalLog`: refusals coalesced (a flood writes a few rows)."""
        self.refused = 0
        self.pending = 0
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> DialInListener:
        _call(self.manager.loop, self._astart())
        log.info(
            "observer: listening for agents on %s:%s%s", self.host, self.port, " (TLS)" if self.ssl_context else ""
        )
        return self

    async def _astart(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, limit=P.MAX_OUTBOUND_FRAME + 64
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._server is None or self.manager.loop.is_closed():
            return
        with contextlib.suppress(Exception):
            _call(self.manager.loop, self._astop())

    async def _astop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.pending >= MAX_PENDING:
            self.refused += 1
            writer.close()
            return
        self.pending += 1
        try:
            await self._accept(reader, writer)
        finally:
            self.pending -= 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        name: str | None = None
        try:
            if self.ssl_context is not None:
                try:
                    await writer.start_tls(self.ssl_context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
                except (ssl.SSLError, OSError, TimeoutError) as exc:
                    await self._refuse(writer, peer, None, f"TLS handshake failed: {exc}")
                    return
            try:
                msg = await asyncio.wait_for(self._read_frame(reader), HANDSHAKE_TIMEOUT)
            except (P.FrameError, asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
                await self._refuse(writer, peer, None, f"no dial frame: {type(exc).__name__}")
                return
            try:
                raw_name = P.read_dial(msg)["name"]
            except P.FrameError:
                await self._refuse(writer, peer, None, "the first frame must be a dial frame")
                return
            if not NAME_RE.match(raw_name):
                await self._refuse(writer, peer, None, f"bad node name {raw_name[:100]!r}")
                return
            name = raw_name
            existing = self.manager.get(name)
            if existing is not None and not isinstance(existing, DialInAttachment):
                await self._refuse(writer, peer, name, "a node attached by address already has that name")
                return
            token = self.tokens.get(name) or self.tokens.get("*")
            if not token:
                await self._refuse(writer, peer, name, "no agent token for this node name")
                return
            try:
                client = await AgentClient.over(reader, writer, token=token, role=self.role, timeout=HANDSHAKE_TIMEOUT)
            except (AgentError, P.FrameError, asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
                why = f"{exc.code}: {exc.message}" if isinstance(exc, AgentError) else type(exc).__name__
                await self._refuse(writer, peer, name, f"handshake failed ({why})")
                return
            att = self.manager.get(name)
            if att is None:
                att = await asyncio.to_thread(self.manager.add, peer, token, self.role, name=name, cls=DialInAttachment)
            if not isinstance(att, DialInAttachment):
                await client.close()
                return
            log.info("observer: %s dialled in from %s", name, peer)
            att.hand_over(client, peer)
        except asyncio.CancelledError:
            writer.close()
            raise

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
        (n,) = P.HEADER.unpack(await reader.readexactly(P.HEADER.size))
        if n > 4096:
            raise P.FrameError("dial frame too large")
        return P.decode_payload(await reader.readexactly(n))

    async def _refuse(self, writer: asyncio.StreamWriter, peer: str, name: str | None, reason: str) -> None:
        self.refused += 1
        log.warning("observer: refused an agent dialling in from %s (%s): %s", peer, name or "?", reason)
        with contextlib.suppress(Exception):
            writer.write(P.encode_frame({"t": "error", "code": P.E_AUTH_FAILED, "message": "refused"}))
            writer.close()
        if self.refusals is not None:  # coalesced per address (not per port) and rate-limited
            host = peer.rsplit(":", 1)[0]
            self.refusals.note("dial_in", "refused", who="agent", addr=host, node=name, message=reason, sync=False)
            return
        store = self.store
        if store is None:
            return
        try:
            aid = await asyncio.to_thread(store.audit, "agent", peer, "dial_in", name, {}, node=name)
            store.audit_result(aid, {"error": "refused", "message": reason}, ok=False)
        except Exception as exc:
            log.error("observer: could not audit a refused dial-in: %s", exc)

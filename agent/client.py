"""A small asyncio client for the agent protocol (standard library only).

Used by the observer, the chaos runner, the benchmarks and the tests::

    client = await AgentClient.connect("127.0.0.1", 4711, token="...")
    snapshot = await client.read_snapshot()
    result = await client.command("kill", pid="<0.42.0>", reason="kill")
    msg = await client.next_message()     # events, samples, gaps, snapshots
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import ssl
from typing import Any

from . import protocol as P


class AgentError(Exception):
    """The agent refused: ``code`` is one of ``protocol.E_*``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AgentClient:
    """One authenticated connection to an agent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.hello: dict[str, Any] = {}
        """The agent's ``hello`` (:class:`protocol.HelloMsg`), checked."""
        self.welcome: dict[str, Any] = {}
        """The agent's ``welcome`` (:class:`protocol.WelcomeMsg`), checked."""
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.max_frame = P.MAX_OUTBOUND_FRAME
        self.features: tuple[str, ...] = P.FEATURES
        """Features asked for in the handshake (``()``: served as an older observer is)."""
        self.observer_id = secrets.token_hex(8)
        """This side's id in the handshake's MACs (random per connection unless set before the handshake)."""

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        token: str | bytes,
        role: str = P.ROLE_OPERATOR,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 5.0,
        features: tuple[str, ...] = P.FEATURES,
    ) -> AgentClient:
        """Connect and authenticate; raises :class:`AgentError` if refused.
        ``features``: those to ask for (``()``: served as an observer older
        than them is)."""
        tok = token.encode() if isinstance(token, str) else token
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=ssl_context,
                server_hostname=server_hostname if ssl_context else None,
                limit=P.MAX_OUTBOUND_FRAME + 64,
            ),
            timeout,
        )
        return await cls.over(reader, writer, token=tok, role=role, timeout=timeout, features=features)

    @classmethod
    async def over(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        token: str | bytes,
        role: str = P.ROLE_OPERATOR,
        timeout: float = 5.0,
        features: tuple[str, ...] = P.FEATURES,
    ) -> AgentClient:
        """Authenticate over an open stream (the agent speaks first with
        ``hello``): used by :meth:`connect` and for agents that dialled out to
        the observer. Raises :class:`AgentError` if refused; closes ``writer``
        on any failure."""
        tok = token.encode() if isinstance(token, str) else token
        client = cls(reader, writer)
        client.features = features
        try:
            await asyncio.wait_for(client._handshake(tok, role), timeout)
        except BaseException:
            writer.close()
            raise
        client._reader_task = asyncio.create_task(client._read_loop())
        return client

    async def _read(self) -> dict[str, Any]:
        (n,) = P.HEADER.unpack(await self.reader.readexactly(P.HEADER.size))
        if n > self.max_frame:
            raise P.FrameError(f"frame of {n} bytes over the limit")
        return P.decode_payload(await self.reader.readexactly(n))

    def _send(self, obj: P.AuthMsg | P.CommandMsg) -> None:
        self.writer.write(P.encode_frame(obj))

    async def _handshake(self, token: bytes, role: str) -> None:
        try:
            hello = await self._read()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise AgentError(
                P.E_BAD_HANDSHAKE,
                f"connection closed before the agent's hello ({type(exc).__name__}); "
                "wrong port, TLS mismatch or a refused client certificate?",
            ) from None
        if hello.get("t") == "error":
            err = P.read_error(hello)
            raise AgentError(err["code"], err["message"])
        versions = hello.get("versions")
        if hello.get("t") == "hello" and isinstance(versions, list) and P.VERSION not in versions:
            raise AgentError(
                P.E_BAD_HANDSHAKE,
                f"the agent speaks protocol version(s) {versions}, this observer {P.VERSION}: "
                "run the same release on both sides",
            )
        try:
            checked = P.read_hello(hello)
        except P.FrameError as exc:
            raise AgentError(exc.code, str(exc)) from None
        agent_id = checked["agent"]
        self.hello = hello
        nonce = secrets.token_hex(16)
        agent_nonce = checked["nonce"]
        channel = P.channel_binding(self.writer.get_extra_info("ssl_object"))
        auth: P.AuthMsg = {
            "t": "auth",
            "version": P.VERSION,
            "nonce": nonce,
            "observer": self.observer_id,
            "role": role,
            "mac": P.client_mac(
                token, agent_nonce, nonce, role, agent_id=str(agent_id), observer_id=self.observer_id, channel=channel
            ),
        }
        if self.features:
            auth["features"] = list(self.features)
        self._send(auth)
        await self.writer.drain()
        try:
            welcome = await self._read()
        except asyncio.IncompleteReadError:
            raise AgentError(P.E_AUTH_FAILED, "connection closed during the handshake") from None
        if welcome.get("t") == "error":
            err = P.read_error(welcome)
            raise AgentError(err["code"], err["message"])
        try:
            mac = P.read_welcome(welcome)["mac"]
        except P.FrameError:
            mac = None
        expected = P.server_mac(
            token, agent_nonce, nonce, role, agent_id=str(agent_id), observer_id=self.observer_id, channel=channel
        )
        if not P.verify(expected, mac):
            raise AgentError(P.E_AUTH_FAILED, "the agent could not prove it holds the token")
        # since protocol 2 the node's details come after authentication; readers keep finding them in hello
        self.hello = {**hello, "node": welcome.get("node") or {}}
        self.welcome = welcome

    async def _read_loop(self) -> None:
        try:
            while True:
                msg = await self._read()
                t = msg["t"]
                if t == "reply":
                    reply = P.read_reply(msg)
                    rid = reply["id"]
                    fut = self._pending.pop(rid, None) if isinstance(rid, int) else None
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                    continue
                if t == "batch":  # several events in one frame (the ``batch`` feature): each as its own
                    for ev in P.read_batch(msg):
                        self.messages.put_nowait(ev)
                    continue
                if t == "error":
                    err = P.read_error(msg)
                    self.close_reason = f"{err['code']}: {err['message']}"
                await self.messages.put(msg)
        except (asyncio.IncompleteReadError, ConnectionError, P.FrameError, OSError) as exc:
            self.close_reason = self.close_reason or f"{type(exc).__name__}"
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(AgentError("closed", self.close_reason or "connection closed"))
            self._pending.clear()

    async def command(self, cmd: str, *, timeout: float = 10.0, **args: Any) -> Any:
        """Run a command; return its result or raise :class:`AgentError`."""
        reply = P.read_reply(await self.request(cmd, args, timeout=timeout))
        if reply["ok"] is False:
            raise AgentError(reply["error"]["code"], reply["error"]["message"])
        return reply["result"]

    async def request(self, cmd: Any, args: Any, *, timeout: float = 10.0) -> dict[str, Any]:
        """Send a raw command and return the whole reply message."""
        if self.closed.is_set():
            raise AgentError("closed", self.close_reason or "connection closed")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        frame: P.CommandMsg = {"t": "cmd", "id": rid, "cmd": cmd, "args": args}
        self._send(frame)
        await self.writer.drain()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(rid, None)

    async def next_message(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """The next pushed message (event, samples, gap, snapshot part, error)."""
        async with asyncio.timeout(timeout):  # not wait_for: 3.11's can swallow a cancellation
            return await self.messages.get()

    async def read_snapshot(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for a complete snapshot; returns ``{"seq", "procs", "names", "node", "gap"}``.

        Messages other than the snapshot's are dropped while waiting (events
        older than the snapshot are already reflected in it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        procs: list[dict[str, Any]] = []
        gap = 0
        begin: dict[str, Any] | None = None
        while True:
            msg = await self.next_message(max(0.01, deadline - loop.time()))
            t = msg.get("t")
            if t == "gap":
                gap += int(msg.get("dropped", 0))
            elif t == "snapshot_begin":
                begin, procs = msg, []
            elif t == "snapshot_chunk" and begin is not None:
                procs.extend(msg["procs"])
            elif t == "snapshot_end" and begin is not None:
                return {
                    "seq": msg["seq"],
                    "procs": procs,
                    "names": msg.get("names", {}),
                    "node": begin.get("node"),
                    "gap": gap,
                }
            elif t == "error":
                raise AgentError(str(msg.get("code")), str(msg.get("message")))

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except Exception:
            pass
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass

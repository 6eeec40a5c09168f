"""Dial-out: the agent connects to the observer (for nodes behind NAT or in containers).

Only the connection set-up is reversed. The agent opens the TCP (or TLS)
connection to the observer's agent listener (``observer serve
--listen-agents HOST:PORT``), sends one ``dial`` frame naming itself, and from
then on it is an ordinary session (``docs/protocol.md``, "Dial-out"): the agent
sends ``hello``, the observer answers ``auth`` with the HMAC of the node's
token, the agent checks it and answers ``welcome``, then snapshot and deltas.
The agent never trusts the observer more than one that attached: the same
challenge-response, the same roles.

When the connection drops or cannot be made, the agent dials again after a
jittered exponential backoff (``backoff_initial`` doubling up to
``backoff_max``, each wait drawn from 50-100 % of the current delay; back to
``backoff_initial`` after a session that lasted ``stable_after`` seconds).

Threading rules
    :meth:`Dialer.start` and :meth:`Dialer.stop` may be called from any thread;
    the dialling task runs on the agent's own loop thread and is cancelled
    when the agent stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import ssl
import time

from . import protocol as P
from ._agent import WRITE_HIGH_WATER, Agent
from ._session import Session

log = logging.getLogger("agent")

__all__ = ["Dialer", "dial_ssl_context"]


def dial_ssl_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client context: verify the observer against ``ca`` (the system store
    without it); present ``cert``/``key`` for mutual TLS."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    elif key:
        raise ValueError("a TLS key without a certificate")
    return ctx


class Dialer:
    """Keeps one outgoing session to an observer open. Create with :func:`agent.dial`."""

    def __init__(
        self,
        agent: Agent,
        host: str,
        port: int,
        *,
        name: str,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not name or len(name) > 100:
            raise ValueError("the dial-out name must be 1 to 100 characters")
        self.agent = agent
        self.host = host
        self.port = port
        self.name = name
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        self.attempts = 0
        self.sessions = 0
        """Sessions that got past the handshake and have ended."""
        self.current: Session | None = None
        """The session in progress (handshake included), if any."""
        self.last_error: str | None = None
        self._future: concurrent.futures.Future[None] | None = None

    def start(self) -> Dialer:
        loop = self.agent._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("start the agent before dialling out")
        self._future = asyncio.run_coroutine_threadsafe(self._run(), loop)
        return self

    def stop(self) -> None:
        """Stop dialling and close the current session (idempotent)."""
        fut = self._future
        if fut is not None and not fut.done():
            fut.cancel()

    async def _run(self) -> None:
        delay = self.backoff_initial
        while True:
            self.attempts += 1
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host,
                        self.port,
                        ssl=self.ssl_context,
                        server_hostname=(self.server_hostname or self.host) if self.ssl_context else None,
                        limit=self.agent.max_frame + 64,
                    ),
                    self.connect_timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                err = f"{type(exc).__name__}: {exc}"
                if err != self.last_error:
                    log.warning("agent: cannot dial the observer at %s:%s: %s", self.host, self.port, err)
                self.last_error = err
                await self._sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            started = time.monotonic()
            session = await self._serve(reader, writer)
            if session.ready:
                self.sessions += 1
                self.last_error = None
            else:
                self.last_error = "the observer refused the session (token or certificate?)"
                log.warning("agent: %s (%s:%s)", self.last_error, self.host, self.port)
            if time.monotonic() - started >= self.stable_after:
                delay = self.backoff_initial
            await self._sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Session:
        with contextlib.suppress(Exception):
            writer.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        session = Session(self.agent, reader, writer)
        try:
            dial: P.DialMsg = {"t": "dial", "protocol": P.PROTOCOL, "name": self.name}
            writer.write(P.encode_frame(dial))
            await writer.drain()
        except (OSError, ConnectionError):
            writer.close()
            return session
        log.info("agent: dialled the observer at %s:%s as %s", self.host, self.port, self.name)
        self.agent.sessions.append(session)
        self.current = session
        try:
            await session.run()  # returns when the connection ends; removes itself from agent.sessions
        finally:
            self.current = None
        return session

    @property
    def connected(self) -> bool:
        """True while a session with the observer is established (past the handshake)."""
        s = self.current
        return s is not None and s.ready

    @staticmethod
    async def _sleep(delay: float) -> None:
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))

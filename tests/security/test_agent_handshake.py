"""Attacks on the agent's handshake, run as an attacker would, with real sockets:
a relaying peer, a flood of half-open handshakes, an old observer, a peek at
``hello``. A legitimate observer attaches throughout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent import protocol as P
from agent._preauth import PreAuth
from agent.client import AgentClient, AgentError
from observer.attach import AttachManager
from tests.agent.conftest import OP_TOKEN, Host
from tests.observer.certs import Pki, make_pki

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture
def tls_host(pki: Pki) -> Iterator[Host]:
    h = Host(tls_cert=pki.server_cert, tls_key=pki.server_key)
    yield h
    h.stop()


@pytest.fixture
def plain_host() -> Iterator[Host]:
    h = Host()
    yield h
    h.stop()


def _client_ctx(pki: Pki) -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca)


async def _read_frame(reader: asyncio.StreamReader, timeout: float = 5.0) -> dict[str, Any]:
    (n,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), timeout))
    return P.decode_payload(await asyncio.wait_for(reader.readexactly(n), timeout))


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, seen: list[bytes]) -> None:
    with contextlib.suppress(Exception):
        while data := await src.read(65536):
            seen.append(data)
            dst.write(data)
            await dst.drain()
    dst.close()


async def _finish(handlers: set[asyncio.Task[Any]]) -> None:
    """Let a test server's connection handlers end (their peers have closed),
    cancelling any still running after a bound, so no task outlives the test."""
    if handlers:
        _, pending = await asyncio.wait(handlers, timeout=5)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _attach(port: int, *, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> AgentClient:
    client = await AgentClient.connect(
        host, port, token=OP_TOKEN, ssl_context=ssl_context, server_hostname="127.0.0.1" if ssl_context else None
    )
    await client.read_snapshot()
    return client


async def test_hello_says_only_what_the_handshake_needs_and_welcome_brings_the_rest(plain_host: Host) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plain_host.agent.port)
    hello = await _read_frame(reader)
    writer.close()
    assert set(hello) == {"t", "protocol", "versions", "nonce", "agent"}, hello
    assert hello["versions"] == [2]
    client = await _attach(plain_host.agent.port)
    try:
        node = client.welcome["node"]
        assert {"host", "os_pid", "python", "process_count"} <= set(node)
        assert client.hello["node"] == node  # the observer finds them where it always did
    finally:
        await client.close()


async def test_an_old_observer_gets_a_clear_error(plain_host: Host, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.audit")
    reader, writer = await asyncio.open_connection("127.0.0.1", plain_host.agent.port)
    hello = await _read_frame(reader)
    # what a protocol-1 observer sent: no observer id, a MAC over the nonces only
    writer.write(P.encode_frame({"t": "auth", "version": 1, "nonce": "b" * 32, "role": "operator", "mac": "00"}))
    err = await _read_frame(reader)
    writer.close()
    assert err["t"] == "error" and err["code"] == P.E_BAD_HANDSHAKE
    assert "upgrade the observer" in err["message"] and "[2]" in err["message"], err
    assert hello["nonce"]
    assert any("protocol version 1" in r.getMessage() for r in caplog.records)


async def test_a_relaying_peer_with_a_valid_certificate_gets_no_session(
    tls_host: Host, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    """A compromised node (a certificate from the same CA, the shared token's
    holder's traffic passing through it) terminates the observer's TLS and
    relays every byte to the real agent over its own TLS connection. The
    observer's MAC covers its own connection's channel binding: the agent,
    seeing another channel, refuses it; the relay saw the whole exchange and
    still has nothing it can use."""
    caplog.set_level(logging.INFO, logger="agent.audit")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    upstream_ctx = _client_ctx(pki)
    seen: list[bytes] = []
    relayed = asyncio.Event()

    handlers: set[asyncio.Task[Any]] = set()

    async def relay(r_in: asyncio.StreamReader, w_in: asyncio.StreamWriter) -> None:
        handlers.add(cast("asyncio.Task[Any]", asyncio.current_task()))
        r_out, w_out = await asyncio.open_connection(
            "127.0.0.1", tls_host.agent.port, ssl=upstream_ctx, server_hostname="127.0.0.1"
        )
        relayed.set()
        await asyncio.gather(_pipe(r_in, w_out, seen), _pipe(r_out, w_in, seen))

    relay_server = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=server_ctx)
    relay_port = relay_server.sockets[0].getsockname()[1]
    try:
        failures = tls_host.agent.auth_failures
        with pytest.raises(AgentError) as err:
            await AgentClient.connect(
                "127.0.0.1", relay_port, token=OP_TOKEN, ssl_context=_client_ctx(pki), server_hostname="127.0.0.1"
            )
        assert relayed.is_set() and any(b'"auth"' in chunk for chunk in seen)  # it did relay the handshake
        assert err.value.code == P.E_AUTH_FAILED
        assert tls_host.agent.auth_failures == failures + 1
        assert any("authentication failed" in r.getMessage() for r in caplog.records)
        # the legitimate observer, straight to the agent over TLS, is served
        client = await _attach(tls_host.agent.port, ssl_context=_client_ctx(pki))
        assert client.welcome["role"] == "operator"
        await client.close()
    finally:
        relay_server.close()
        await _finish(handlers)


async def test_a_forwarder_that_cannot_read_the_traffic_does_not_break_tls_attach(tls_host: Host, pki: Pki) -> None:
    """A plain TCP forwarder (a NAT, a port forward) sees only ciphertext: the
    channel binding is the same on both ends and the observer attaches."""

    handlers: set[asyncio.Task[Any]] = set()

    async def forward(r_in: asyncio.StreamReader, w_in: asyncio.StreamWriter) -> None:
        handlers.add(cast("asyncio.Task[Any]", asyncio.current_task()))
        r_out, w_out = await asyncio.open_connection("127.0.0.1", tls_host.agent.port)
        await asyncio.gather(_pipe(r_in, w_out, []), _pipe(r_out, w_in, []))

    fwd = await asyncio.start_server(forward, "127.0.0.1", 0)
    try:
        client = await _attach(fwd.sockets[0].getsockname()[1], ssl_context=_client_ctx(pki))
        await client.close()
    finally:
        fwd.close()
        await _finish(handlers)


async def test_a_mac_made_for_one_agent_is_refused_by_another_with_the_same_token() -> None:
    """Two agents sharing a token: the observer's answer to agent A's hello,
    replayed to agent B with B's nonce swapped in by a relay, fails (the MAC
    covers A's agent id)."""
    a, b = Host(), Host()
    try:
        ra, wa = await asyncio.open_connection("127.0.0.1", a.agent.port)
        hello_a = await _read_frame(ra)
        rb, wb = await asyncio.open_connection("127.0.0.1", b.agent.port)
        hello_b = await _read_frame(rb)
        assert hello_a["agent"] != hello_b["agent"]
        # the relay shows the observer B's nonce under A's identity
        mac = P.client_mac(
            OP_TOKEN.encode(), hello_b["nonce"], "c" * 32, "operator", agent_id=hello_a["agent"], observer_id="o"
        )
        wb.write(
            P.encode_frame(
                {"t": "auth", "version": 2, "nonce": "c" * 32, "observer": "o", "role": "operator", "mac": mac}
            )
        )
        assert (await _read_frame(rb))["code"] == P.E_AUTH_FAILED
        wa.close()
        wb.close()
    finally:
        a.stop()
        b.stop()


async def _turns(reader: asyncio.StreamReader, n: int) -> None:
    """Let the loop turn until ``n`` bytes sent on loopback sit in ``reader``'s buffer."""
    deadline = time.monotonic() + 5
    while len(getattr(reader, "_buffer", b"")) < n:
        assert time.monotonic() < deadline, "the bytes never arrived"
        await asyncio.sleep(0)


async def _attach_retrying(port: int, within: float) -> float:
    t0 = time.monotonic()
    while True:
        try:
            client = await _attach(port)
            await client.close()
            return time.monotonic() - t0
        except AgentError as exc:
            assert exc.code == P.E_BUSY, exc  # never locked out, at worst asked to retry
            assert time.monotonic() - t0 < within, "no attach under the flood"


@pytest.mark.parametrize("flood_from", ["127.0.0.1", "127.0.0.2"])
async def test_half_open_handshakes_never_lock_an_observer_out(
    plain_host: Host, flood_from: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An attacker's process holds 600 connections that never answer hello,
    re-opened as soon as the agent drops them, from the observer's own address
    or another, against a pending pool of 128; the observer still attaches
    each time; the flood is logged a few lines, not one per connection."""
    caplog.set_level(logging.INFO, logger="agent.audit")
    pre = plain_host.agent.preauth
    pre.max_pending = pre.per_peer = 128  # fewer slots than the flood, whatever the open-files limit
    port = plain_host.agent.port
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.security.flood_agent", str(port), flood_from, "600",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert attacker.stdout is not None
        assert (await asyncio.wait_for(attacker.stdout.readline(), 60)).strip() == b"up"
        times = [await _attach_retrying(port, within=30) for _ in range(3)]
        # never locked out (at worst "busy", retried); the 2 s target is the bench's, with a pool
        # bigger than its flood: this pool is overrun on purpose, on a shared machine
        assert max(times) < 30, times
        assert pre.pending <= pre.max_pending
        assert pre.evicted + pre.refused > 0  # the pool was full: eviction and busy ran
    finally:
        assert attacker.stdin is not None
        attacker.stdin.close()
        try:
            await asyncio.wait_for(attacker.wait(), 20)
        except TimeoutError:
            attacker.kill()
            await attacker.wait()
    lines = [r for r in caplog.records if "handshake from" in r.getMessage()]
    assert len(lines) < 20, len(lines)


async def test_a_silent_connection_is_dropped_at_the_pre_auth_deadline(plain_host: Host) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plain_host.agent.port)
    await _read_frame(reader)
    t0 = time.monotonic()
    err = await _read_frame(reader, timeout=10)
    assert err["t"] == "error" and err["code"] == P.E_BAD_HANDSHAKE
    assert 1.5 < time.monotonic() - t0 < 4.0
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


@pytest.mark.parametrize("sent", [b"\x00\x00\x00\x05{...}", b"", b"\x00\x00\x01\x00{partial"])
async def test_a_connection_whose_answer_has_arrived_is_never_evicted(sent: bytes) -> None:
    """The pool is full with one connection, past its grace; a newcomer knocks. If that
    connection's answer has arrived (its bytes wait, unread: the agent's loop has not got
    to them yet on a loaded host), the newcomer is told ``busy`` and the answered one
    stays; a silent one is evicted as before, and so is one that sent part of a frame (a
    flood trickling bytes gets no protection). Real sockets, the agent's pre-auth pool."""
    answered = sent.startswith(b"\x00\x00\x00\x05")
    pre = PreAuth(max_pending=1, grace=0.0)
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        cr, cw = await asyncio.open_connection("127.0.0.1", port)
        sr, sw = await accepted.get()
        assert pre.admit("127.0.0.1", sw, sr)
        if sent:
            cw.write(sent)  # the observer's auth (or part of a frame), not read by a session yet
            await cw.drain()
            await _turns(sr, len(sent))  # in the reader's buffer, as a session would find it
        fr, fw = await asyncio.open_connection("127.0.0.1", port)
        _fsr, fsw = await accepted.get()
        admitted = pre.admit("127.0.0.1", fsw, _fsr)
        victim = fr if answered else cr
        err = await _read_frame(victim)
        assert err["t"] == "error" and err["code"] == P.E_BUSY
        assert admitted is not answered
        assert (pre.refused, pre.evicted) == ((1, 0) if answered else (0, 1))
        assert pre.pending == 1
        fw.close()
        cw.close()
        sw.close()
        fsw.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_the_observer_retries_a_busy_agent_within_a_second() -> None:
    """Every handshake slot held by young connections (nothing can be evicted): the
    observer's attach loop is told ``busy`` again and again. Once the slots free up it
    is attached within about a second (``busy`` is retried at once, not backed off like
    a node that is away)."""
    h = Host()
    manager = AttachManager()
    holders: list[asyncio.StreamWriter] = []
    try:
        pre = h.agent.preauth
        pre.max_pending = pre.per_peer = 4
        pre.grace = 3600.0  # nothing is evicted: every newcomer is told busy
        for _ in range(4):
            r, w = await asyncio.open_connection("127.0.0.1", h.agent.port)
            await _read_frame(r)
            holders.append(w)
        att = await asyncio.to_thread(manager.add, h.agent.address, OP_TOKEN, "operator", name="n")

        async def until(pred: Any, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while not pred():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.01)

        await until(lambda: pre.refused >= 6, 20, "six busy answers")
        assert att.status != "up" and P.E_BUSY in (att.last_error or "")
        for w in holders:
            w.close()
        t0 = time.monotonic()
        await until(lambda: att.status == "up", 10, "the attach once the slots free up")
        assert time.monotonic() - t0 < 2.5  # an exponential backoff would be at 16 s by now
    finally:
        await asyncio.to_thread(manager.close)
        h.stop()

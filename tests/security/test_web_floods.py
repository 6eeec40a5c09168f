"""Attacks on the served observer, run as an attacker would: real sockets against
``observer serve`` (gunicorn, as deployed) attached to a real demo node.

Each attack is refused at once and audited (coalesced), while a logged-in
client keeps being served and keeps receiving live batches."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from tests.observer import READ_TOKEN, wait_for
from tests.observer.nodes import NodeProcess, clean_env, login, read_line, stop_process

ROOT = Path(__file__).resolve().parent.parent.parent
LOGIN = "security-test-login-token-0123456789"


class Server:
    """``observer serve --attach demo=...`` in a subprocess, with a known login token."""

    def __init__(self, tmp: Path, mode: str = "threading") -> None:
        self.node = NodeProcess(seed=1)
        (tmp / "agents").write_text(READ_TOKEN)
        (tmp / "logins").write_text(f"{LOGIN} role=operator name=op\n")
        (tmp / "logins").chmod(0o600)
        (tmp / "agents").chmod(0o600)
        argv = [sys.executable, "-m", "observer", "serve", "--port", "0", "--no-browser", "--async-mode", mode,
                "--node-token-file", str(tmp / "agents"), "--login-token-file", str(tmp / "logins"),
                "--attach", f"demo={self.node.address}"]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        assert self.proc.stdout is not None
        m, _ = read_line(self.proc.stdout, re.compile(r"open (http://127\.0\.0\.1:(\d+))/login"), 90, "the URL")
        self.base, self.port = m.group(1), int(m.group(2))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def stop(self) -> None:
        stop_process(self.proc)
        self.node.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("sec-web"))
    try:
        yield s
    finally:
        s.stop()


def _upgrade(port: int, *, host: str | None = None, cookie: str | None = None, origin: str | None = None) -> bytes:
    """A raw WebSocket upgrade to /socket.io/; returns the status line and headers (or b"" if closed)."""
    lines = [
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


class LiveClient:
    """A logged-in browser's live connection (python-socketio, WebSocket transport)."""

    def __init__(self, base: str) -> None:
        self.http = requests.Session()
        self.csrf = login(self.http, base, LOGIN)
        self.sio = socketio.Client(reconnection=False)
        self.batches = 0
        self.got = threading.Event()

        def on_batch(msg: dict[str, Any]) -> None:
            self.batches += 1
            self.got.set()

        self.sio.on("batch", on_batch, namespace="/live")
        self.sio.connect(base, headers={"Cookie": self.cookie()}, namespaces=["/live"], transports=["websocket"])
        self.sio.emit("subscribe", {"node": "demo", "view": "overview"}, namespace="/live")

    def cookie(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())

    def get(self, url: str) -> requests.Response:
        """A GET on a new connection (a pooled one may be closed by the server's keep-alive
        timeout just as it is reused; a browser retries that, requests does not)."""
        return requests.get(url, cookies=self.http.cookies, timeout=10)

    def close(self) -> None:
        self.sio.disconnect()


def _audits(http: requests.Session, base: str) -> list[dict[str, Any]]:
    r = requests.get(f"{base}/api/audit", params={"limit": 500}, cookies=http.cookies, timeout=10)  # new connection
    assert r.status_code == 200, r.text
    return list(r.json()["audit"])


def test_unauthenticated_websockets_are_refused_before_the_upgrade_and_audited_while_a_user_is_served(
    server: Server,
) -> None:
    user = LiveClient(server.base)
    try:
        assert user.got.wait(20), "the logged-in client gets batches"
        started = time.monotonic()
        statuses = [_upgrade(server.port).split(b"\r\n", 1)[0] for _ in range(300)]
        elapsed = time.monotonic() - started
        assert all(b" 401 " in s for s in statuses), set(statuses)
        assert elapsed < 30  # each one answered at once, none held
        # more than the server has threads, held open at the same time: all refused, the user still served
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(400)]
        try:
            for s in held:
                s.sendall(
                    f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
            t0 = time.monotonic()
            assert user.get(f"{server.base}/api/overview").status_code == 200
            assert time.monotonic() - t0 < 2.0
            before = user.batches
            wait_for(lambda: user.batches > before, timeout=10, what="a batch during the flood")
        finally:
            for s in held:
                s.close()
        # a forged Host (DNS rebinding) and a foreign Origin, even with a valid cookie
        assert b" 403 " in _upgrade(server.port, host="evil.example", cookie=user.cookie())
        assert b" 403 " in _upgrade(server.port, cookie=user.cookie(), origin="http://evil.example")
        assert b" 101 " in _upgrade(server.port, cookie=user.cookie())  # the same, legitimately

        def refusals() -> list[dict[str, Any]]:
            return [r for r in _audits(user.http, server.base) if r["action"] == "socket_connect"]

        wait_for(
            lambda: {"login_required", "host", "origin"} <= {_code(r) for r in refusals()}, what="refusals audited"
        )
        rows = refusals()
        assert all(r["ok"] == 0 and r["who"].startswith(("anonymous", "op/")) for r in rows), rows
        assert len(rows) < 20, "700 refusals coalesced into a few rows"
    finally:
        user.close()


def _code(row: dict[str, Any]) -> str:
    res = row.get("result")
    if isinstance(res, dict):
        return str(res.get("error"))
    return str(res)


def test_other_namespaces_and_unknown_events_are_refused_and_audited(server: Server) -> None:
    user = LiveClient(server.base)
    try:
        other = socketio.Client(reconnection=False)
        with pytest.raises(socketio.exceptions.ConnectionError):
            other.connect(server.base, headers={"Cookie": user.cookie()}, namespaces=["/"], transports=["websocket"])
        with pytest.raises(socketio.exceptions.ConnectionError):
            other.connect(
                server.base, headers={"Cookie": user.cookie()}, namespaces=["/admin"], transports=["websocket"]
            )
        for _ in range(50):
            user.sio.emit("eval", {"code": "1"}, namespace="/live")
        wait_for(
            lambda: [r for r in _audits(user.http, server.base) if r["action"] == "socket_event"],
            what="the unknown event audited",
        )
        rows = [r for r in _audits(user.http, server.base) if r["action"] == "socket_event"]
        assert len(rows) == 1 and rows[0]["target"] == "eval"  # 50 refusals, one row until the window ends
        assert user.sio.connected
    finally:
        user.close()


def test_one_session_cannot_hold_more_than_its_share_of_live_sockets(server: Server) -> None:
    user = LiveClient(server.base)
    extra: list[socket.socket] = []
    try:
        cookie = user.cookie()
        codes = []
        for _ in range(12):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            extra.append(s)
            s.sendall(
                f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\nCookie: {cookie}\r\n\r\n".encode()
            )
            codes.append(s.recv(4096).split(b"\r\n", 1)[0])
        # the live client holds one; seven more are allowed, the rest refused
        assert sum(b" 101 " in c for c in codes) == 7, codes
        assert all(b" 429 " in c for c in codes[7:]), codes
        other = LiveClient(server.base)  # another login is not affected
        assert other.got.wait(20)
        other.close()
    finally:
        for s in extra:
            s.close()
        user.close()


def test_the_gevent_worker_keeps_serving_under_a_slow_request_flood(tmp_path: Path) -> None:
    """400 connections that send half a request head and stop (slowloris): with
    ``--async-mode gevent`` each costs a greenlet, and a logged-in user is served
    at once. (The default worker is covered by ``test_slow_requests.py``: its
    selector front reads each request whole before a thread gets it.)"""
    srv = Server(tmp_path, mode="gevent")
    held: list[socket.socket] = []
    try:
        http = requests.Session()
        login(http, srv.base, LOGIN)
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n".encode())
            held.append(s)
        t0 = time.monotonic()
        assert requests.get(f"{srv.base}/api/overview", cookies=http.cookies, timeout=10).status_code == 200
        assert time.monotonic() - t0 < 2.0
        live = LiveClient(srv.base)
        assert live.got.wait(20), "live batches under the flood"
        live.close()
    finally:
        for s in held:
            s.close()
        srv.stop()

"""Slow-request floods (slowloris) against the default server, run as an attacker would:
hundreds of real sockets on loopback that send half a request and then a byte now and
then, against ``observer serve`` (gunicorn's gthread worker with our selector front,
as deployed), while a logged-in user is served."""

from __future__ import annotations

import re
import resource
import selectors
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

from observer.front import REQUEST_TIMEOUT
from tests.observer import wait_for
from tests.observer.certs import make_pki
from tests.observer.nodes import clean_env, login, read_line, stop_process
from tests.security.test_web_floods import LOGIN, LiveClient, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tmp_path_factory.mktemp("sec-slow"))
    try:
        yield s
    finally:
        s.stop()


class SlowFlood:
    """``n`` connections, each sending an unfinished request, then one more byte of it every
    ``every`` seconds (heads, and bodies shorter than their Content-Length); records when
    the server closes each one."""

    def __init__(self, port: int, n: int, *, every: float = 0.5) -> None:
        self.socks: list[socket.socket] = []
        self.opened = time.monotonic()
        self.closed_at: dict[int, float] = {}
        self._stop = threading.Event()
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 4 == 3:  # a complete head, then a body that never ends
                s.sendall(
                    f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/x-www-form-"
                    "urlencoded\r\nContent-Length: 100000\r\n\r\ntoken=".encode()
                )
            else:
                s.sendall(f"GET /api/overview HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Slow: ".encode())
            s.setblocking(False)
            self.socks.append(s)
        self._every = every
        self._threads = [threading.Thread(target=self._dribble, daemon=True), threading.Thread(target=self._watch)]
        for t in self._threads:
            t.start()

    def _dribble(self) -> None:
        while not self._stop.wait(self._every):
            for i, s in enumerate(self.socks):
                if i not in self.closed_at:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass

    def _watch(self) -> None:
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, i)
        while not self._stop.is_set() and len(self.closed_at) < len(self.socks):
            for key, _ in sel.select(0.2):
                i = key.data
                try:
                    data = self.socks[i].recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed_at[i] = time.monotonic() - self.opened
                    sel.unregister(self.socks[i])
        sel.close()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        for s in self.socks:
            s.close()


def _timed_get(url: str, cookies: Any = None) -> tuple[int, float]:
    t0 = time.monotonic()
    r = requests.get(url, cookies=cookies, timeout=10, allow_redirects=False)  # a new connection each time
    return r.status_code, time.monotonic() - t0


def test_slow_requests_hold_no_thread_and_are_closed_at_the_request_deadline(server: Server) -> None:
    user = LiveClient(server.base)
    flood: SlowFlood | None = None
    try:
        assert user.got.wait(20), "the logged-in client gets batches"
        # more slow requests than the server has threads (320), each trickling a byte every 0.5 s
        flood = SlowFlood(server.port, 400)
        for _ in range(3):
            status, took = _timed_get(f"{server.base}/login")
            assert status == 200 and took < 2.0, (status, took)
            status, took = _timed_get(f"{server.base}/api/overview", user.http.cookies)
            assert status == 200 and took < 2.0, (status, took)
        before = user.batches
        wait_for(lambda: user.batches > before, timeout=10, what="a batch on the live socket during the flood")
        fresh = LiveClient(server.base)  # a new login and a new live socket during the flood
        try:
            assert fresh.got.wait(20), "a live socket opened during the flood gets batches"
        finally:
            fresh.close()
        assert not flood.closed_at, "nothing is closed before the deadline while it trickles"
        # a deadline for the whole request, not per read: every one is closed though it still trickles
        wait_for(
            lambda: len(flood.closed_at) == len(flood.socks),
            timeout=REQUEST_TIMEOUT + 15,
            what="the slow requests closed at the deadline",
        )
        closed = sorted(flood.closed_at.values())
        assert closed[0] > REQUEST_TIMEOUT - 1.5, closed[:5]
        status, took = _timed_get(f"{server.base}/api/overview", user.http.cookies)
        assert status == 200 and took < 2.0
        assert user.sio.connected
    finally:
        if flood is not None:
            flood.stop()
        user.close()


def _raw(port: int, request: bytes, *, close_write: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            if b"\r\n\r\n" in data and not close_write:
                return data


def test_bodies_the_front_cannot_buffer_are_refused_and_ordinary_ones_pass(server: Server, tmp_path: Path) -> None:
    host = f"Host: 127.0.0.1:{server.port}\r\n"
    big = _raw(server.port, f"POST /login HTTP/1.1\r\n{host}Content-Length: 99999999\r\n\r\n".encode())
    assert big.startswith(b"HTTP/1.1 413 "), big
    chunked = _raw(server.port, f"POST /login HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n".encode())
    assert chunked.startswith(b"HTTP/1.1 411 "), chunked
    huge_head = _raw(server.port, f"GET / HTTP/1.1\r\n{host}X-Big: {'a' * 70000}\r\n\r\n".encode())
    assert huge_head.startswith(b"HTTP/1.1 431 "), huge_head[:100]
    # a length gunicorn does not read as one: answered 400 at once, nothing waited for
    odd = _raw(server.port, f"POST /login HTTP/1.1\r\n{host}Content-Length: +5\r\n\r\n".encode())
    assert odd.startswith(b"HTTP/1.1 400 "), odd[:100]
    # a login form posted whole, and one sent with Expect: 100-continue (answered by the front)
    http = requests.Session()
    r = http.post(f"{server.base}/login", data={"token": LOGIN}, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        body = f"token={LOGIN}".encode()
        s.sendall(
            f"POST /login HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert s.recv(4096).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 302 "), answer[:200]
    # two requests pipelined on one kept-alive connection, both answered
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"GET /login HTTP/1.1\r\n{host}\r\nGET /login HTTP/1.1\r\n{host}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data.count(b"HTTP/1.1 200 ") == 2, data[:300]


def test_clients_that_never_close_their_end_do_not_stall_the_server(server: Server) -> None:
    """Requests with ``Connection: close`` from clients that then keep their end open: the
    closing lingers in the selector. (gunicorn's own waits up to 2 s for each on its main
    loop: 200 of them stopped it answering anything for minutes.)"""
    http = requests.Session()
    r = http.post(f"{server.base}/login", data={"token": LOGIN}, allow_redirects=False, timeout=10)
    assert r.status_code == 302
    held: list[socket.socket] = []
    try:
        req = f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode()
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            s.sendall(req)
            held.append(s)
        for s in held[-5:]:
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        status, took = _timed_get(f"{server.base}/api/overview", http.cookies)
        assert status == 200 and took < 2.0, (status, took)
    finally:
        for s in held:
            s.close()


def test_new_connections_are_served_after_the_server_closes_live_sockets(server: Server) -> None:
    """A live socket's descriptor is closed by its WebSocket thread while the worker closes
    the connection too (a logout closes the session's live sockets): the descriptor, soon
    reused by a new connection, must not be left behind in the worker's selector (it was
    once: every new connection on that descriptor was reset)."""
    for _ in range(3):
        user = LiveClient(server.base)
        closed = threading.Event()
        user.sio.on("disconnect", closed.set, namespace="/live")
        assert user.got.wait(20)
        r = user.http.post(
            f"{server.base}/logout", headers={"X-CSRF-Token": user.csrf, "Origin": server.base}, timeout=10
        )
        assert r.status_code == 200, r.text
        assert closed.wait(10), "the logged-out session's live socket closed by the server"
        other = requests.Session()
        for _ in range(20):
            assert other.get(f"{server.base}/login", timeout=10).status_code == 200
            assert requests.get(f"{server.base}/login", timeout=10).status_code == 200  # a new connection


def _drain(proc: subprocess.Popen[bytes]) -> None:
    for _ in proc.stdout or ():
        pass


def test_slow_tls_handshakes_hold_no_thread(tmp_path: Path) -> None:
    """With HTTPS, the TLS handshake is done in the selector too: 350 connections that
    stall mid-handshake (half a ClientHello, or nothing at all) hold no thread; a user's
    HTTPS requests are answered at once."""
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "logins").write_text(f"{LOGIN} role=operator name=op\n")
    (tmp_path / "agents").write_text("agents-token-0123456789abcdef")
    for f in ("logins", "agents"):
        (tmp_path / f).chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer", "serve", "--listen-agents", "127.0.0.1:0", "--node-token-file",
         str(tmp_path / "agents"), "--login-token-file", str(tmp_path / "logins"), "--port", "0", "--no-browser",
         "--tls-cert", pki.server_cert, "--tls-key", pki.server_key],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        m, _ = read_line(proc.stdout, re.compile(r"open (https://127\.0\.0\.1:(\d+))/login"), 60, "the HTTPS URL")
        base, port = m.group(1), int(m.group(2))
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()  # a full pipe would stall it
        http = requests.Session()
        http.verify = pki.ca
        http.trust_env = False
        login(http, base, LOGIN)
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # a ClientHello's first bytes, then silence
        for i in range(350):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if i % 2:
                s.sendall(hello)
            held.append(s)
        for _ in range(3):
            t0 = time.monotonic()
            r = requests.get(f"{base}/api/overview", cookies=http.cookies, verify=pki.ca, timeout=10)
            assert r.status_code == 200 and time.monotonic() - t0 < 2.0, (r.status_code, time.monotonic() - t0)
    finally:
        for s in held:
            s.close()
        stop_process(proc)


def test_slow_bodies_cannot_fill_the_memory(server: Server) -> None:
    """100 requests each sending 900 KB of a 1 MB body and stopping: 90 MB, over what the
    front holds for requests being read (64 MiB): those holding the most are dropped at
    once (not at the deadline), the rest wait, and a user is served throughout."""
    http = requests.Session()
    login(http, server.base, LOGIN)
    body = b"token=" + b"a" * 899_994
    socks: list[socket.socket] = []
    dropped = 0
    try:
        t0 = time.monotonic()
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            socks.append(s)
            try:
                s.sendall(
                    f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/x-www-"
                    "form-urlencoded\r\nContent-Length: 1000000\r\n\r\n".encode()
                    + body
                )
            except OSError:
                dropped += 1  # closed while sending: dropped already
        status, took = _timed_get(f"{server.base}/api/overview", http.cookies)
        assert status == 200 and took < 2.0, (status, took)

        def closed(s: socket.socket) -> bool:
            s.setblocking(False)
            try:
                return s.recv(1) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True

        wait_for(lambda: sum(closed(s) for s in socks) >= 20, timeout=5, what="the biggest holders dropped")
        assert time.monotonic() - t0 < REQUEST_TIMEOUT  # by the budget, not the deadline
        assert sum(not closed(s) for s in socks) <= (64 << 20) // 900_000 + 1
    finally:
        for s in socks:
            s.close()


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))  # the server's cap: 300 connections


def test_past_the_connection_cap_the_oldest_slow_request_makes_room(tmp_path: Path) -> None:
    """A server allowed 600 descriptors (so 300 connections): 400 slow requests from the
    user's own address fill it and more; each newcomer makes room by closing the oldest
    request still being read, so the user's requests get in at once."""
    (tmp_path / "logins").write_text(f"{LOGIN} role=operator name=op\n")
    (tmp_path / "agents").write_text("agents-token-0123456789abcdef")
    for f in ("logins", "agents"):
        (tmp_path / f).chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer", "serve", "--listen-agents", "127.0.0.1:0", "--node-token-file",
         str(tmp_path / "agents"), "--login-token-file", str(tmp_path / "logins"), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(), preexec_fn=_low_nofile,
    )  # fmt: skip
    flood: SlowFlood | None = None
    try:
        assert proc.stdout is not None
        m, _ = read_line(proc.stdout, re.compile(r"open (http://127\.0\.0\.1:(\d+))/login"), 60, "the URL")
        base, port = m.group(1), int(m.group(2))
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
        http = requests.Session()
        login(http, base, LOGIN)
        flood = SlowFlood(port, 400)
        wait_for(lambda: len(flood.closed_at) >= 90, timeout=10, what="the oldest slow requests closed for room")
        assert max(flood.closed_at.values()) < REQUEST_TIMEOUT  # made room, not timed out
        for _ in range(5):
            status, took = _timed_get(f"{base}/api/overview", http.cookies)
            assert status == 200 and took < 2.0, (status, took)
    finally:
        if flood is not None:
            flood.stop()
        stop_process(proc)

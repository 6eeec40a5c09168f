"""Several observer servers sharing one history database (PostgreSQL): a session
ended on one server ends on the others within seconds, its live connections
closed. Two real ``observer serve`` processes, one real PostgreSQL server
(tests/pgcluster.py), real HTTP and Socket.IO clients."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from observer.sessions import RECHECK
from tests.observer import TOKEN, wait_for
from tests.observer.nodes import clean_env, login, read_line, stop_process

OPERATOR = "shared-sessions-operator-token-0123456789"
LEAKED = "shared-sessions-leaked-read-token-0123456789"


class Server:
    """``observer serve`` with its history in PostgreSQL and two login tokens."""

    def __init__(self, tmp: Path, db: str) -> None:
        tmp.mkdir()
        logins = tmp / "logins"
        logins.write_text(f"{OPERATOR} role=operator name=op\n{LEAKED} role=read name=intern\n")
        logins.chmod(0o600)
        agents = tmp / "agents"
        agents.write_text(TOKEN)
        agents.chmod(0o600)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer", "serve", "--db", db, "--login-token-file", str(logins),
             "--port", "0", "--no-browser",
             "--listen-agents", "127.0.0.1:0", "--node-token-file", str(agents)],  # nothing attached: agents dial in
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip
        assert self.proc.stdout is not None
        m, _ = read_line(self.proc.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 90, "the URL")
        self.base = m.group(1)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    def session(self, token: str) -> tuple[requests.Session, str]:
        http = requests.Session()
        return http, login(http, self.base, token)

    def stop(self) -> None:
        stop_process(self.proc)


class Live:
    """A logged-in browser's live connection to ``/live``; notes when the server closes it."""

    def __init__(self, base: str, http: requests.Session) -> None:
        self.closed = threading.Event()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("disconnect", self.closed.set, namespace="/live")
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        self.sio.connect(base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"])


def _status(base: str, http: requests.Session) -> int:
    return requests.get(f"{base}/api/overview", cookies=http.cookies, timeout=10).status_code


def _sessions(base: str, http: requests.Session) -> list[dict[str, Any]]:
    r = http.get(f"{base}/api/sessions", timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json()["sessions"])


@pytest.fixture
def servers(tmp_path: Path, postgres_url: str) -> Any:
    a = Server(tmp_path / "a", postgres_url)
    try:
        b = Server(tmp_path / "b", postgres_url)
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_a_session_ended_on_one_server_ends_on_the_other_within_seconds(servers: tuple[Server, Server]) -> None:
    a, b = servers
    user, _ = b.session(OPERATOR)
    live = Live(b.base, user)
    op, op_csrf = a.session(OPERATOR)
    try:
        assert _status(b.base, user) == 200
        mine = {r["id"] for r in _sessions(b.base, user) if r["current"]}
        # the operator on server A sees the session made on B (one history) and ends it
        listed = {r["id"]: r for r in _sessions(a.base, op)}
        [sid] = mine
        assert listed[sid]["status"] == "live"
        r = op.post(f"{a.base}/api/sessions/{sid}/revoke", headers={"X-CSRF-Token": op_csrf}, timeout=10)
        assert r.status_code == 200 and r.json()["ended"] == 1, r.text
        # server B refuses the cookie from then on and closes its live connection, within seconds
        wait_for(lambda: _status(b.base, user) == 401, timeout=RECHECK + 8, what="B refusing the revoked session")
        assert live.closed.wait(RECHECK + 8), "B closed the revoked session's live connection"
        assert _status(a.base, op) == 200  # the operator's own session goes on
        audit = op.get(f"{a.base}/api/audit", timeout=10).json()["audit"]
        assert any(row["action"] == "session_revoke" and row["ok"] == 1 for row in audit)
    finally:
        live.sio.disconnect()


def test_logging_out_every_session_of_a_leaked_token_reaches_every_server(servers: tuple[Server, Server]) -> None:
    a, b = servers
    leaked = [b.session(LEAKED)[0], b.session(LEAKED)[0], a.session(LEAKED)[0]]  # two on B, one on A
    lives = [Live(b.base, leaked[0]), Live(a.base, leaked[2])]
    op, op_csrf = a.session(OPERATOR)
    try:
        assert [_status(s.base, h) for s, h in zip((b, b, a), leaked, strict=True)] == [200, 200, 200]
        one_on_b = next(r["id"] for r in _sessions(b.base, leaked[0]) if r["current"])
        r = op.post(f"{a.base}/api/sessions/{one_on_b}/revoke-token", headers={"X-CSRF-Token": op_csrf}, timeout=10)
        assert r.status_code == 200 and r.json()["ended"] == 3, r.text
        for server, http in zip((b, b, a), leaked, strict=True):
            wait_for(lambda s=server, h=http: _status(s.base, h) == 401, timeout=RECHECK + 8, what="every copy ended")
        for live in lives:
            assert live.closed.wait(RECHECK + 8)
        assert _status(a.base, op) == 200 and _status(b.base, b.session(OPERATOR)[0]) == 200
    finally:
        for live in lives:
            live.sio.disconnect()

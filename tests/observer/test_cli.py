"""The CLI: ``CliRunner`` for argument handling, and end-to-end ``observer demo``
in a subprocess (real gunicorn / eventlet server, real demo process)."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import requests
import socketio
from click.testing import CliRunner

from observer.cli import main
from observer.cli.helpers import login_tokens, read_node_tokens
from observer.serve import eventlet_available
from tests.observer import wait_for

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
NO_NODE_TOKEN = {"OBSERVER_NODE_TOKEN": "", "OBSERVER_NODE_TOKEN_FILE": "", "OBSERVER_AGENT_TOKEN": ""}


def test_help_lists_the_commands() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    assert all(cmd in out for cmd in ("demo", "serve", "open", "chaos"))
    assert "--allow-destructive-actions" in CliRunner().invoke(main, ["demo", "--help"]).output


def test_python_dash_m_observer_is_the_same_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "observer", "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Usage: observer [OPTIONS] COMMAND" in res.stdout and "chaos" in res.stdout


def test_serve_needs_a_node_token_from_a_file_or_the_environment(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["serve", "--attach", "127.0.0.1:1", "--no-browser"], env=NO_NODE_TOKEN)
    assert res.exit_code == 2 and "no token for 127.0.0.1:1" in res.output and "--node-token-file" in res.output
    res = CliRunner().invoke(main, ["serve", "--attach", "nonsense", "--no-browser"], env=NO_NODE_TOKEN)
    assert res.exit_code == 2 and "HOST:PORT" in res.output
    assert "token" not in CliRunner().invoke(main, ["serve", "--help"]).output.split("--node-token-file")[0].lower()


def test_the_agents_own_token_is_not_a_node_token_and_the_error_says_so() -> None:
    env = NO_NODE_TOKEN | {"OBSERVER_AGENT_TOKEN": "the-agents-own-token"}
    res = CliRunner().invoke(main, ["serve", "--attach", "127.0.0.1:1", "--no-browser"], env=env)
    assert res.exit_code == 2
    assert "OBSERVER_AGENT_TOKEN is the agent's own token, not read by the observer" in res.output


def test_node_tokens_are_read_from_files_then_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = tmp_path / "one"
    one.write_text("secret\n")
    assert read_node_tokens(str(one)) == {"*": "secret"}
    many = tmp_path / "many"
    many.write_text("# staging\nstaging-1 s1\n10.0.0.2:4711 s2\n")
    assert read_node_tokens(str(many)) == {"staging-1": "s1", "10.0.0.2:4711": "s2"}
    monkeypatch.setenv("OBSERVER_AGENT_TOKEN", "the-agents-own")
    monkeypatch.delenv("OBSERVER_NODE_TOKEN_FILE", raising=False)
    monkeypatch.delenv("OBSERVER_NODE_TOKEN", raising=False)
    assert read_node_tokens(None) == {}
    monkeypatch.setenv("OBSERVER_NODE_TOKEN", "from-env")
    assert read_node_tokens(None) == {"*": "from-env"}
    monkeypatch.setenv("OBSERVER_NODE_TOKEN_FILE", str(many))
    assert read_node_tokens(None) == {"staging-1": "s1", "10.0.0.2:4711": "s2"}
    bad = tmp_path / "bad"
    bad.write_text("a b c\nd e\n")
    with pytest.raises(click.UsageError, match="NAME_OR_HOST:PORT TOKEN"):
        read_node_tokens(str(bad))


def test_login_token_comes_from_observer_login_token_and_the_old_name_is_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for k in ("OBSERVER_LOGIN_TOKEN", "OBSERVER_LOGIN_TOKEN_FILE", "OBSERVER_TOKEN", "OBSERVER_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OBSERVER_LOGIN_TOKEN", "login-from-env-123")
    assert login_tokens(None) == ("login-from-env-123", ())
    f = tmp_path / "logins"
    f.write_text("AAAAAAAA role=read name=r\n")
    f.chmod(0o600)
    monkeypatch.setenv("OBSERVER_LOGIN_TOKEN_FILE", str(f))
    token, grants = login_tokens(None)
    assert token == "AAAAAAAA" and grants[0].role == "read"
    assert capsys.readouterr().err == ""
    f.chmod(0o644)  # readable by others: it still works, with a warning
    assert login_tokens(None)[0] == "AAAAAAAA"
    assert f"{f} can be read by other users (mode 0644)" in capsys.readouterr().err
    monkeypatch.delenv("OBSERVER_LOGIN_TOKEN_FILE")
    monkeypatch.delenv("OBSERVER_LOGIN_TOKEN")
    monkeypatch.setenv("OBSERVER_TOKEN", "old-name-token")
    token, _ = login_tokens(None)
    assert token != "old-name-token"  # not read: a fresh one
    assert "OBSERVER_TOKEN is not read since 0.2.0: it is now OBSERVER_LOGIN_TOKEN" in capsys.readouterr().err


def test_tls_flags_are_tls_cert_tls_key_and_tls_ca(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("not a certificate\n")
    env = NO_NODE_TOKEN | {"OBSERVER_NODE_TOKEN": "t" * 20}
    base = ["serve", "--attach", "127.0.0.1:1", "--no-browser"]
    res = CliRunner().invoke(main, [*base, "--tls-cert", str(pem)], env=env)
    assert res.exit_code == 2 and "--tls-cert and --tls-key go together" in res.output
    res = CliRunner().invoke(main, [*base, "--host", "0.0.0.0"], env=env)
    assert res.exit_code == 2 and "give --tls-cert/--tls-key" in res.output
    res = CliRunner().invoke(main, ["demo", "--host", "0.0.0.0", "--no-browser"])
    assert res.exit_code == 2 and "refusing plain HTTP" in res.output  # before the demo process starts
    res = CliRunner().invoke(main, ["serve", "--listen-agents", "127.0.0.1:0", "--agents-tls-ca", str(pem)], env=env)
    assert res.exit_code == 2 and "need --agents-tls-cert" in res.output
    res = CliRunner().invoke(main, ["serve", "--listen-agents", "127.0.0.1:0", "--agents-tls-cert", str(pem)], env=env)
    assert res.exit_code == 2 and "--agents-tls-cert:" in res.output  # not a PEM: a clear error, no traceback
    for old in ("--certfile", "--keyfile", "--agents-certfile", "--agents-keyfile", "--agents-client-ca"):
        res = CliRunner().invoke(main, [*base, old, str(pem)], env=env)
        assert res.exit_code == 2 and "No such option" in res.output, old
    for cmd in (["serve"], ["demo"], ["open", str(pem)]):
        out = CliRunner().invoke(main, [*cmd, "--help"]).output
        assert "--tls-cert" in out and "--tls-key" in out and "certfile" not in out, cmd


def test_open_refuses_a_file_that_is_not_a_dump_before_binding(tmp_path: Path) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("hello\n")
    res = CliRunner().invoke(main, ["open", str(f), "--port", "0", "--no-browser"])
    assert res.exit_code == 1 and "is not a post-mortem dump" in res.output


# -- end to end ---------------------------------------------------------------------------------


class Demo:
    """``observer demo --port 0 --no-browser`` in a subprocess, logged in."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer", "demo", "--port", "0", "--no-browser", "--seed", "3", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.output = ""
        m = self._wait_for_url(timeout=60)
        self.base, self.token = m.group(1), m.group(2)
        self.demo_pid = int(re.search(r"demo system \(pid (\d+)\)", self.output).group(1))  # type: ignore[union-attr]
        self.http = requests.Session()

    def _wait_for_url(self, timeout: float) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (m := URL_RE.search(self.output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise AssertionError(f"no URL printed: {self.output!r}")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise AssertionError(f"observer exited: {self.output!r} {err[-2000:]}")
                self.output += chunk.decode()
        return m

    def login(self) -> None:
        resp = self.http.post(f"{self.base}/login", data={"token": self.token}, timeout=10)
        assert resp.status_code == 200 and resp.url == f"{self.base}/"

    def get(self, path: str) -> Any:
        resp = self.http.get(f"{self.base}{path}", timeout=10)
        assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
        return resp.json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
        return code


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of an exited parent counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def demo_factory() -> Iterator[Any]:
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        d = Demo(*args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()
        if _alive(d.demo_pid):
            os.kill(d.demo_pid, signal.SIGKILL)


def _check_demo(demo: Demo) -> None:
    assert demo.http.get(f"{demo.base}/api/overview", timeout=10).status_code == 401
    demo.login()

    def up() -> Any:
        ov = demo.get("/api/overview")
        return ov["nodes"] and ov["nodes"][0]["status"] == "up" and ov["nodes"][0]["process_count"] > 20 and ov

    ov = wait_for(up, timeout=30, what="the demo attached")
    assert ov["nodes"][0]["name"] == "demo"
    tree = demo.get("/api/nodes/demo/tree")
    (root,) = tree["tree"]["children"]
    assert root["name"] == "demo_sup" and {c["name"] for c in root["children"]} >= {"payments_sup", "chat_sup"}
    page = demo.http.get(f"{demo.base}/nodes/demo/tree", timeout=10)
    assert page.status_code == 200 and 'id="config"' in page.text


def _live_batches(demo: Demo, count: int) -> list[dict[str, Any]]:
    """Connect a python-socketio client with the session cookie; collect batches."""
    cookie = "; ".join(f"{k}={v}" for k, v in demo.http.cookies.items())
    client = socketio.Client()
    got: list[dict[str, Any]] = []
    client.on("batch", got.append, namespace="/live")
    client.connect(demo.base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"])
    try:
        client.emit("subscribe", {"node": "demo", "view": "overview"}, namespace="/live")
        wait_for(lambda: len(got) >= count, timeout=30, what=f"{count} batches")
    finally:
        client.disconnect()
    return got


@pytest.mark.slow
def test_observer_demo_end_to_end(demo_factory: Any) -> None:
    demo = demo_factory()
    _check_demo(demo)
    batches = _live_batches(demo, 3)
    assert all(b["node"] == "demo" and "stats" in b for b in batches)
    refused = socketio.Client()
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect(demo.base, namespaces=["/live"], transports=["websocket"])  # no cookie
    assert demo.stop() == 0
    wait_for(lambda: not _alive(demo.demo_pid), timeout=15, what="the demo process stopped")


@pytest.mark.slow
@pytest.mark.skipif(not eventlet_available(), reason="eventlet is not installed")
def test_observer_demo_end_to_end_with_eventlet(demo_factory: Any) -> None:
    demo = demo_factory("--async-mode", "eventlet")
    _check_demo(demo)
    assert _live_batches(demo, 2)
    assert demo.stop() == 0
    wait_for(lambda: not _alive(demo.demo_pid), timeout=15, what="the demo process stopped")

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

import pytest
import requests
import socketio
from click.testing import CliRunner

from observer.cli import main, read_agent_tokens
from observer.serve import eventlet_available
from tests.observer import wait_for

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")


def test_help_lists_the_commands() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    assert "demo" in out and "serve" in out
    assert "--allow-destructive-actions" in CliRunner().invoke(main, ["demo", "--help"]).output


def test_serve_needs_an_agent_token_from_a_file_or_the_environment(tmp_path: Path) -> None:
    env = {"OBSERVER_AGENT_TOKEN": "", "OBSERVER_AGENT_TOKEN_FILE": ""}
    res = CliRunner().invoke(main, ["serve", "--attach", "127.0.0.1:1", "--no-browser"], env=env)
    assert res.exit_code == 2 and "no token" in res.output
    res = CliRunner().invoke(main, ["serve", "--attach", "nonsense", "--no-browser"], env=env)
    assert res.exit_code == 2 and "HOST:PORT" in res.output
    assert "token" not in CliRunner().invoke(main, ["serve", "--help"]).output.split("--token-file")[0].lower()


def test_agent_tokens_are_read_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = tmp_path / "one"
    one.write_text("secret\n")
    assert read_agent_tokens(str(one)) == {"*": "secret"}
    many = tmp_path / "many"
    many.write_text("# staging\nstaging-1 s1\n10.0.0.2:4711 s2\n")
    assert read_agent_tokens(str(many)) == {"staging-1": "s1", "10.0.0.2:4711": "s2"}
    monkeypatch.delenv("OBSERVER_AGENT_TOKEN_FILE", raising=False)
    monkeypatch.setenv("OBSERVER_AGENT_TOKEN", "from-env")
    assert read_agent_tokens(None) == {"*": "from-env"}


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
        resp = self.http.get(f"{self.base}/login", params={"token": self.token}, timeout=10)
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

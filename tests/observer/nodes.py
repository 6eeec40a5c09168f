"""Real demo nodes in separate OS processes (``python -m examples.cluster_node``),
and a few helpers for tests that run observer servers as subprocesses."""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from tests.observer import READ_TOKEN, TOKEN

AGENT_RE = re.compile(r"agent (\S+:\d+) .*pid=(\d+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env.update(extra)
    return env


def read_line(stream: IO[bytes], pattern: re.Pattern[str], timeout: float, what: str) -> tuple[re.Match[str], str]:
    """Read ``stream`` until a line matches ``pattern``; returns the match and all output read."""
    deadline = time.monotonic() + timeout
    buf = ""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while True:
            m = pattern.search(buf)
            if m:
                return m, buf
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"timed out waiting for {what}; output so far: {buf[-2000:]!r}")
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"{what}: the process exited; output: {buf[-2000:]!r}")
            buf += chunk.decode(errors="replace")


class NodeProcess:
    """The demo system with its agent, in its own OS process."""

    def __init__(self, *, port: int = 0, traffic: bool = False, seed: int = 1, **env: str) -> None:
        self.port = port or free_port()
        base = {
            "OBSERVER_AGENT_TOKEN": TOKEN,
            "OBSERVER_AGENT_READ_TOKEN": READ_TOKEN,
            "OBSERVER_AGENT_BIND": f"127.0.0.1:{self.port}",
            "OBSERVER_DEMO_SEED": str(seed),
            "OBSERVER_DEMO_TRAFFIC": "1" if traffic else "0",
        }
        self.env = clean_env(**(base | env))
        self.proc: subprocess.Popen[bytes] | None = None
        self.os_pid = 0
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "examples.cluster_node"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        assert self.proc.stdout is not None
        m, _ = read_line(self.proc.stdout, AGENT_RE, 60, "the node's agent line")
        self.os_pid = int(m.group(2))
        assert self.os_pid == self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the node goes away without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p.stdout is not None:
            p.stdout.close()
        self.proc = None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdout, proc.stderr, proc.stdin):
        if f is not None:
            f.close()


def login(http: Any, base: str, token: str) -> str:
    """Log ``http`` (a requests.Session) in; return the CSRF token of the session."""
    r = http.post(f"{base}/login", data={"token": token}, allow_redirects=False)  # the form: a URL's token works once
    assert r.status_code == 302, r.text
    html = http.get(f"{base}/").text
    m = re.search(r'"csrf":\s*"([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def env_map(items: Mapping[str, str] | list[str] | None) -> dict[str, str]:
    """A compose ``environment`` (mapping or ``KEY=VALUE`` list) as a dict."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out

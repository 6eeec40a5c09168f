"""Several observer servers share the browser fan-out through Redis: a real
``redis-server`` (Debian's package; ``make redis-server`` installs it), two
``observer serve --message-queue`` processes attached to one real node, one
python-socketio client on each. The second server publishes nothing itself
(``--no-live-publisher``): whatever its client receives came through Redis."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio

from tests.observer import READ_TOKEN, wait_for
from tests.observer.nodes import NodeProcess, clean_env, free_port, login, read_line, stop_process

LOGIN = "redis-test-login-token-0123"


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (make redis-server installs Debian's package as root)")
    pytest.importorskip("redis", reason="the redis package is needed: pip install -e '.[redis]'")
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def ping() -> bool:
            try:
                return bool(redis.Redis(port=port, socket_timeout=1).ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(ping, timeout=30, what="redis-server up")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


class Server:
    def __init__(self, node: NodeProcess, tmp: Path, redis_url: str, *extra: str) -> None:
        tokens = tmp / "agent.token"
        tokens.write_text(READ_TOKEN)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer", "serve", "--attach", f"n1={node.address}",
             "--node-token-file", str(tokens), "--message-queue", redis_url, "--port", "0", "--no-browser", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(OBSERVER_LOGIN_TOKEN=LOGIN),
        )  # fmt: skip
        assert self.proc.stdout is not None
        m, _ = read_line(self.proc.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 60, "the URL")
        self.base = m.group(1)
        self.http = requests.Session()
        login(self.http, self.base, LOGIN)
        self.batches: list[dict[str, Any]] = []
        self.client = socketio.Client()
        self.client.on("batch", self.batches.append, namespace="/live")
        self.acks: list[dict[str, Any]] = []
        self.client.on("ack", self.acks.append, namespace="/live")
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.client.connect(self.base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"])

    def subscribe(self) -> None:
        ack = self.client.call("subscribe", {"node": "n1", "view": "overview"}, namespace="/live", timeout=10)
        assert ack["ok"], ack

    def close(self) -> None:
        self.client.disconnect()
        stop_process(self.proc)


def test_two_servers_behind_redis_deliver_the_same_batches_to_their_browsers(tmp_path: Path, redis_url: str) -> None:
    node = NodeProcess(traffic=True)
    servers: list[Server] = []
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = Server(node, tmp_path / "a", redis_url)
        servers.append(a)
        b = Server(node, tmp_path / "b", redis_url, "--no-live-publisher")
        servers.append(b)
        for s in servers:
            wait_for(
                lambda s=s: s.http.get(f"{s.base}/api/cluster").json()["nodes"][0]["status"] == "up",
                timeout=60,
                what="attached",
            )
        b.subscribe()  # only b's browser at first: the publisher pushes for it anyway (through Redis)
        wait_for(lambda: len(b.batches) >= 2, timeout=30, what="batches at b's browser, published by a")
        assert not a.acks  # b's subscription is acknowledged to b alone, not broadcast through Redis
        a.subscribe()

        def common() -> set[int]:
            return {x["seq"] for x in a.batches} & {x["seq"] for x in b.batches}

        wait_for(lambda: len(common()) >= 5, timeout=60, what="the same batches at both browsers")
        time.sleep(0.5)  # let the last common batch land on both sides before comparing
        by_a = {x["seq"]: x for x in a.batches}
        by_b = {x["seq"]: x for x in b.batches}
        for seq in sorted(common())[:-1]:
            assert by_a[seq] == by_b[seq]
        assert all(x["node"] == "n1" for x in a.batches + b.batches)
        # one publisher: every batch once per browser, never twice
        assert len(by_b) == len(b.batches) and len(by_a) == len(a.batches)
    finally:
        for s in servers:
            s.close()
        node.stop()

"""The post-mortem dump end to end: a real demo node with its agent in a
subprocess is sent SIGTERM, the agent writes the dump, and ``observer open``
(a real server on loopback) shows it as a frozen node with the same processes
as the last snapshot and its crash reports."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import requests
from click.testing import CliRunner

from agent.client import AgentClient
from observer.cli import main
from tests.observer import wait_for

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
TOKEN = "dump-test-operator-token-0123456789"
T = TypeVar("T")

NODE_MAIN = """
import asyncio, sys
import actors, agent
from examples.demo_system import build

async def main():
    async with actors.Node(log_crashes=False) as node:
        await build(node, seed=5, traffic=False)
        ag = agent.start(node, "127.0.0.1:0", token=sys.argv[1], dump_dir=sys.argv[2])
        print(f"agent 127.0.0.1:{ag.port}", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def _read_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[str], timeout: float = 60.0) -> re.Match[str]:
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while (m := pattern.search(out)) is None:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"nothing matching {pattern.pattern!r} in {out!r}")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"exited: {out!r} {err[-2000:]}")
            out += chunk.decode()
    return m


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


async def _last_snapshot_after_a_crash(address: str) -> tuple[set[str], str]:
    host, port = address.rsplit(":", 1)
    client = await AgentClient.connect(host, int(port), token=TOKEN, role="operator")
    try:
        snap = await client.read_snapshot()
        victim = next(p for p in snap["procs"] if p["supervisor"] and p["kind"] == "gen_server")
        await client.command("kill", pid=victim["pid"], reason="boom")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        got_exit = got_restart = False
        while not (got_exit and got_restart):
            m = await client.next_message(max(0.1, deadline - loop.time()))
            if m.get("ev") == "exit" and m.get("pid") == victim["pid"]:
                assert m["report"]["reason"] == "boom" and m["report"]["own"] is False
                got_exit = True
            if m.get("ev") == "restart" and m.get("old_pid") == victim["pid"]:
                got_restart = True
        await client.command("snapshot")  # the last snapshot before the signal
        snap = await client.read_snapshot()
        return {p["pid"] for p in snap["procs"]}, victim["pid"]
    finally:
        await client.close()


def _run_in_thread(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run`` in a thread of its own (a browser test may leave a loop
    running in this one)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            out.append(asyncio.run(make()))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=main, name="dump-test-client")
    t.start()
    t.join(120)
    if errors:
        raise errors[0]
    return out[0]


def test_a_dump_written_on_sigterm_opens_as_a_frozen_node(tmp_path: Path) -> None:
    script = tmp_path / "node_main.py"
    script.write_text(NODE_MAIN)
    dumps = tmp_path / "dumps"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env["PYTHONPATH"] = os.getcwd()
    node = subprocess.Popen(
        [sys.executable, str(script), TOKEN, str(dumps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        address = _read_until(node, re.compile(r"agent (\S+)\n")).group(1)
        pids, victim = _run_in_thread(lambda: _last_snapshot_after_a_crash(address))
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == -signal.SIGTERM  # the default action still ends the process
    finally:
        _stop(node)
    files = [p for p in os.listdir(dumps)]
    assert len(files) == 1 and files[0].endswith(".json"), files
    dump_path = dumps / files[0]
    data = json.loads(dump_path.read_text())
    assert data["reason"] == "signal SIGTERM"
    assert {p["pid"] for p in data["processes"]} == pids
    assert [c["pid"] for c in data["crashes"]] == [victim]

    login = tmp_path / "login"
    login.write_text("dump-login-token-123")
    obs = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "observer",
            "open",
            str(dump_path),
            "--port",
            "0",
            "--no-browser",
            "--login-token-file",
            str(login),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        base = _read_until(obs, URL_RE).group(1)
        http = requests.Session()
        assert http.get(f"{base}/login", params={"token": "dump-login-token-123"}, timeout=10).status_code == 200

        def get(path: str) -> Any:
            resp = http.get(f"{base}{path}", timeout=10)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
            return resp.json()

        nodes = get("/api/nodes")["nodes"]
        assert len(nodes) == 1 and nodes[0]["status"] == "dump" and nodes[0]["frozen"] is True
        name = nodes[0]["name"]
        rows = get(f"/api/nodes/{name}/processes?limit=5000")["rows"]
        assert {r["pid"] for r in rows} == pids
        assert get(f"/api/nodes/{name}/tree")["tree"]
        groups = wait_for(lambda: get("/api/crashes")["groups"], what="the dump's crash reports")
        assert groups[0]["node"] == name and groups[0]["latest"]["pid"] == victim
        report = get(f"/api/crashes/{groups[0]['latest']['id']}")
        assert report["report"]["ancestry"][-1]["pid"] == victim
        # no agent behind a dump: the inspector says so instead of failing
        some = next(iter(pids))
        one = get(f"/api/nodes/{name}/processes/{some}")
        assert one["inspect"] is None and one["inspect_error"]["error"] == "not_connected"
        assert http.get(f"{base}/crash/{groups[0]['latest']['id']}", timeout=10).status_code == 200
    finally:
        _stop(obs)


def test_observer_open_refuses_what_is_not_a_dump(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    res = CliRunner().invoke(main, ["open", str(bad), "--no-browser"])
    assert res.exit_code == 1 and "is not a post-mortem dump" in res.output
    gz = tmp_path / "bad.json.gz"
    gz.write_bytes(gzip.compress(b"not json"))
    res = CliRunner().invoke(main, ["open", str(gz), "--no-browser"])
    assert res.exit_code == 1 and "unreadable JSON" in res.output

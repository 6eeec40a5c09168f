"""``observer mcp`` driven by the official ``mcp`` SDK's own client, over stdio
and over streamable HTTP, against a real demo node in its own process.

Every tool is listed and called. The operator's token kills a process (the
crash then reads back through the crash tools and the event window); a
read-only token cannot call a destructive tool, and the refusal is in the
audit log like the UI's.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from examples.demo_system import PAYMENTS
from observer import HistoryStore
from observer.mcp import DESTRUCTIVE_TOOLS, READ_TOOLS
from tests.observer import TOKEN, wait_for
from tests.observer.nodes import NodeProcess, clean_env, free_port, read_line, stop_process

ROOT = Path(__file__).resolve().parents[2]
OP = "mcp-operator-token-0123456789abcdef"
RO = "mcp-read-token-0123456789abcdef012"


@pytest.fixture(scope="module")
def node() -> Iterator[NodeProcess]:
    n = NodeProcess(traffic=False, seed=4)
    try:
        yield n
    finally:
        n.stop()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "node_token").write_text(TOKEN)
    (tmp_path / "logins").write_text(f"{OP} role=operator name=alice\n{RO} role=read name=bob\n")
    return tmp_path


def _argv(node: NodeProcess, files: Path, *extra: str) -> list[str]:
    return [
        "-m", "observer", "mcp", "--attach", f"demo={node.address}",
        "--node-token-file", str(files / "node_token"), "--login-token-file", str(files / "logins"),
        "--db", str(files / "history.sqlite3"), "--allow-destructive-actions", *extra,
    ]  # fmt: skip


def _run(main: Callable[[], Awaitable[None]]) -> None:
    """``anyio.run(main)`` on a thread of its own: the session's Playwright (tests/browser)
    keeps an asyncio loop running on the main thread."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            anyio.run(main)
        except BaseException as exc:
            failure.append(exc)

    t = threading.Thread(target=target, name="mcp-client")
    t.start()
    t.join(300)
    assert not t.is_alive(), "the MCP client did not finish"
    if failure:
        raise failure[0]


def _data(result: Any) -> Any:
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


async def _call(session: ClientSession, name: str, **args: Any) -> Any:
    return _data(await session.call_tool(name, args))


async def _until(session: ClientSession, name: str, check: Any, timeout: float = 30, **args: Any) -> Any:
    """Call a tool until ``check(data)`` holds (the node attaches, the crash is stored...)."""
    with anyio.fail_after(timeout):
        while True:
            data = await _call(session, name, **args)
            if check(data):
                return data
            await anyio.sleep(0.05)


async def _read_tools(session: ClientSession) -> None:
    nodes = await _until(session, "nodes", lambda d: d and d[0]["status"] == "up" and d[0]["process_count"] > 10)
    assert [n["name"] for n in nodes] == ["demo"]
    tree = await _call(session, "tree", node="demo")
    assert "demo_sup" in {c["name"] for c in tree["children"]}
    hits = await _call(session, "find_processes", node="demo", query="payments")
    assert {h["name"] for h in hits} >= {"payments", "payments_sup"}
    info = await _call(session, "process_info", node="demo", pid=PAYMENTS)
    assert info["process"]["name"] == PAYMENTS and info["inspect_error"] is None
    text = json.dumps(info["inspect"])
    assert "api_key" in text and "sk_live_" not in text  # the agent redacted the secret
    preview = await _call(session, "kill_preview", node="demo", pid=PAYMENTS)
    assert preview["restarts"] and preview["restarts"][0]["supervisor"]
    assert isinstance(await _call(session, "crash_groups"), list)
    assert isinstance(await _call(session, "events", node="demo", since=time.time() - 3600), list)
    refused = await session.call_tool("tree", {"node": "nope"})
    assert refused.is_error and "unknown_node" in refused.content[0].text


def _audits(db: Path) -> list[dict[str, Any]]:
    store = HistoryStore(str(db))
    try:
        return store.audits()
    finally:
        store.close()


def test_stdio_an_operator_lists_and_calls_every_tool(node: NodeProcess, files: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=_argv(node, files),
        env=clean_env(PYTHONPATH=str(ROOT), OBSERVER_MCP_TOKEN=OP),
        cwd=str(files),
    )

    async def main() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "observer"
            described = (await session.list_tools()).tools
            assert {t.name for t in described} == set(READ_TOOLS) | set(DESTRUCTIVE_TOOLS)
            for t in described:  # the hints clients use to ask before acting
                assert t.annotations is not None and t.annotations.destructive_hint == (t.name in DESTRUCTIVE_TOOLS)
                assert t.annotations.read_only_hint == (t.name in READ_TOOLS) and t.description
            await _read_tools(session)
            t0 = time.time()
            old = (await _call(session, "process_info", node="demo", pid=PAYMENTS))["pid"]
            assert (await _call(session, "kill", node="demo", pid=PAYMENTS))["pid"] == old
            groups = await _until(session, "crash_groups", bool, node="demo")
            assert groups[0]["signature"] == "exit killed of PaymentWorker" and groups[0]["count"] == 1
            report = await _call(session, "crash_report", report_id=groups[0]["latest"]["id"])
            assert report["pid"] == old and report["report"]["reason"] == "killed"
            window = await _until(session, "events", lambda d: any(e["kind"] == "exit" and e["pid"] == old for e in d),
                                  node="demo", since=t0 - 1, until=time.time() + 60)  # fmt: skip
            assert all(t0 - 1 <= e["time"] for e in window)
            room = "room:lobby"
            lobby = (await _call(session, "process_info", node="demo", pid=room))["pid"]
            await _call(session, "suspend", node="demo", pid=room)
            await _until(
                session, "process_info", lambda d: d["process"]["status"] == "suspended", node="demo", pid=lobby
            )
            await _call(session, "resume", node="demo", pid=room)
            await _until(
                session, "process_info", lambda d: d["process"]["status"] != "suspended", node="demo", pid=lobby
            )
            assert await _call(session, "send", node="demo", pid=room, message={"hello": "from mcp"}) is not None

    _run(main)
    audits = _audits(files / "history.sqlite3")
    done = {(a["action"], a["ok"]) for a in audits}
    assert {("kill", 1), ("suspend", 1), ("resume", 1), ("send", 1)} <= done
    assert all(a["who"] == "alice/mcp" and a["from_addr"] == "mcp-stdio" for a in audits)


def test_stdio_refuses_to_start_without_a_known_token(node: NodeProcess, files: Path) -> None:
    for env in ({}, {"OBSERVER_MCP_TOKEN": "not-a-login-token"}):
        proc = subprocess.run(
            [sys.executable, *_argv(node, files)], env=clean_env(PYTHONPATH=str(ROOT), **env),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert proc.returncode == 2 and "OBSERVER_MCP_TOKEN" in proc.stderr, proc.stderr
        assert proc.stdout == ""


@pytest.fixture
def http_server(node: NodeProcess, files: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, *_argv(node, files, "--transport", "http", "--port", str(port))],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(PYTHONPATH=str(ROOT)), cwd=files,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        m, _ = read_line(proc.stdout, re.compile(r"observer: mcp (http://\S+/mcp)"), 60, "the MCP URL")
        yield m.group(1)
    finally:
        stop_process(proc)


def test_http_a_read_only_token_reads_but_cannot_kill_and_the_refusal_is_audited(http_server: str, files: Path) -> None:
    async def main() -> None:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {RO}"}) as http,
            streamable_http_client(http_server, http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            listed = {t.name for t in (await session.list_tools()).tools}
            assert listed == set(READ_TOOLS) | set(DESTRUCTIVE_TOOLS)  # listed: the server allows them
            await _read_tools(session)
            for name in DESTRUCTIVE_TOOLS:
                args: dict[str, Any] = {"node": "demo", "pid": PAYMENTS}
                if name == "send":
                    args["message"] = "hi"
                result = await session.call_tool(name, args)
                assert result.is_error and "not_permitted" in result.content[0].text, (name, result.content)
            assert (await _call(session, "nodes"))[0]["process_count"] > 10

    _run(main)

    def refusals() -> list[dict[str, Any]]:  # the outcome is written just after the row, by the writer thread
        found = [a for a in _audits(files / "history.sqlite3") if a["who"] == "bob/mcp"]
        return found if len(found) == len(DESTRUCTIVE_TOOLS) and all(a["result"] for a in found) else []

    refused = wait_for(refusals, timeout=20, what="the refusals' outcomes")
    assert {a["action"] for a in refused} == set(DESTRUCTIVE_TOOLS)
    assert all(not a["ok"] and a["result"]["error"] == "not_permitted" for a in refused), refused
    assert all(a["from_addr"] == "mcp-http" and a["node"] == "demo" for a in refused)


def test_http_without_a_valid_bearer_token_is_turned_away(http_server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {OP}"}):
        r = httpx2.post(http_server, json=body, headers=headers | auth, timeout=10)
        assert r.status_code == 401, (auth, r.status_code, r.text[:200])

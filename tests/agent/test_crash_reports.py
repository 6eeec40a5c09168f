"""Crash reports through the real agent: redacted on the wire, the flight
recorder switched by command, dumps on request and a clear error when the
dump cannot be written."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import actors
from agent import protocol as P
from agent.client import AgentError
from tests.agent.conftest import Host, connect, next_event


class Vault(actors.GenServer):
    async def init(self, *args: Any) -> Any:
        return {"user": "bob", "password": "hunter2-state", "count": 0}

    async def handle_call(self, request: Any, from_: actors.From, state: Any) -> Any:
        return actors.Reply("ok", {**state, "count": state["count"] + 1})

    async def handle_cast(self, request: Any, state: Any) -> Any:
        raise ValueError(f"refused: token={request['api_key']}")


def _read(path: Path) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _exit_of(pid: actors.Pid) -> Any:
    return lambda m: m.get("t") == "ev" and m.get("ev") == "exit" and m.get("pid") == str(pid)


async def test_report_on_the_wire_masks_secrets_in_message_state_and_text(host: Host) -> None:
    pid = host.run_async(actors.start_server(host.node, Vault, name="vault"))
    client = await connect(host)
    try:
        await client.read_snapshot()
        host.run(lambda: host.node.cast(pid, {"op": "open", "api_key": "sk-live-secret-1"}))
        ev = await next_event(client, _exit_of(pid))
        r = ev["report"]
        assert r["pid"] == str(pid) and r["exception"] == "ValueError" and r["message_kind"] == "cast"
        assert r["message"]["value"]["op"] == "open" and r["message"]["value"]["api_key"] == "***"
        assert r["message"]["masked"] == 1
        assert r["state"]["value"] == {"user": "bob", "password": "***", "count": 0}
        assert "token=***" in r["exceptions"][0]["message"] and "token=***" in r["traceback"]
        assert ev["traceback"] == r["traceback"]  # one text (formatted and redacted once)
        own = [f for f in r["exceptions"][0]["frames"] if f["own"]]
        assert own[-1]["function"] == "Vault.handle_cast" and "raise ValueError" in own[-1]["source"]
        assert [a["name"] for a in r["ancestry"]] == ["vault"]
        text = json.dumps(ev)
        assert "sk-live-secret-1" not in text and "hunter2-state" not in text
    finally:
        await client.close()


async def test_flight_recorder_command_switches_a_subtree_and_is_operator_only(host: Host) -> None:
    async def build() -> actors.Pid:
        return await actors.start_supervisor(
            host.node, [Vault.child_spec(id="a"), Vault.child_spec(id="b")], intensity=5, name="vaults"
        )

    sup = host.run_async(build())
    kids = host.run_async(actors.which_children(host.node, sup))
    a = next(c.pid for c in kids if c.id == "a")
    reader = await connect(host, "read")
    client = await connect(host)
    try:
        with pytest.raises(AgentError) as err:
            await reader.command("flight_recorder", pid=str(sup), on=True, subtree=True)
        assert err.value.code == P.E_NOT_PERMITTED
        with pytest.raises(AgentError) as err:
            await client.command("flight_recorder", pid=str(sup), on="yes")
        assert err.value.code == P.E_BAD_ARGS
        res = await client.command("flight_recorder", pid="vaults", on=True, size=2, subtree=True)
        assert set(res["pids"]) == {str(sup), *(str(c.pid) for c in kids)}
        await client.read_snapshot()
        for _ in range(4):
            host.run_async(host.node.call(a, "ping"))
        host.run(lambda: host.node.cast(a, {"api_key": "k"}))
        r = (await next_event(client, _exit_of(a)))["report"]
        assert [f["kind"] for f in r["flight"]] == ["call", "call", "cast"]
        assert all(isinstance(f["duration"], float) for f in r["flight"][:2]) and r["flight"][2]["duration"] is None
        assert r["flight"][2]["message"] == {"api_key": "***"}
        off = await client.command("flight_recorder", pid=str(sup), on=False, subtree=True)
        assert str(sup) in off["pids"]
        assert host.run(lambda: all(p._flight is None for p in host.node.iter_processes()))
    finally:
        await reader.close()
        await client.close()


@pytest.fixture
def dump_host(tmp_path: Path) -> Any:
    before = set(threading.enumerate())
    h = Host(dump_dir=str(tmp_path / "dumps"))
    yield h
    h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


async def test_dump_command_writes_every_process_and_recent_crashes(dump_host: Host, tmp_path: Path) -> None:
    host = dump_host
    pid = host.run_async(actors.start_server(host.node, Vault, name="vault"))
    client = await connect(host)
    try:
        await client.read_snapshot()
        host.run(lambda: host.node.cast(pid, {"api_key": "sk-dump-secret"}))
        await next_event(client, _exit_of(pid))
        keeper = host.run_async(actors.start_server(host.node, Vault, name="keeper"))
        res = await client.command("dump")
        path = Path(res["path"])
        assert path.parent == tmp_path / "dumps"
        assert not [n for n in os.listdir(path.parent) if n.startswith(".")], "no temporary file left"
        text = _read(path)
        data = json.loads(text)
        assert data["format"] == P.DUMP_FORMAT and data["version"] == P.DUMP_VERSION
        procs = {p["pid"]: p for p in data["processes"]}
        assert str(keeper) in procs and procs[str(keeper)]["path"] == [str(keeper)]
        assert procs[str(keeper)]["stack"] and "mailbox" in procs[str(keeper)]
        assert set(procs) == {str(p) for p in host.node.processes()}
        assert data["names"]["keeper"] == str(keeper)
        assert [c["pid"] for c in data["crashes"]] == [str(pid)]
        assert "sk-dump-secret" not in text
    finally:
        await client.close()


async def test_an_unwritable_dump_is_a_clear_logged_error_and_leaves_no_file(
    dump_host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = dump_host
    d = tmp_path / "dumps"
    os.rmdir(d)
    d.write_text("a file where the directory was")  # every write there fails (ENOTDIR), even as root
    client = await connect(host)
    try:
        with caplog.at_level(logging.ERROR, logger="agent"), pytest.raises(AgentError) as err:
            await client.command("dump")
        assert err.value.code == P.E_FAILED and "cannot write the post-mortem dump" in err.value.message
        assert any("cannot write the post-mortem dump" in r.getMessage() for r in caplog.records)
    finally:
        await client.close()
    assert d.read_text() == "a file where the directory was"

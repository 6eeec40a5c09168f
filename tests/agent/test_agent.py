"""The agent end to end: a real node thread, a real agent, real sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time
from typing import Any

import pytest

import actors
import agent
from agent import protocol as P
from agent.client import AgentClient, AgentError
from tests.agent.conftest import OP_TOKEN, Host, connect, next_event


async def idle(proc: actors.Process) -> None:
    while True:
        msg = await proc.receive()
        if msg == "crash":
            raise ValueError("asked to crash") from KeyError("the cause")


class Wallet(actors.GenServer):
    async def init(self, *args: Any) -> Any:
        return {"owner": "ada", "password": "hunter2", "balance": 10}

    async def handle_call(self, request: Any, from_: actors.From, state: Any) -> Any:
        return actors.Reply(state["balance"], state)


def ev(kind: str, **fields: Any) -> Any:
    return lambda m: m.get("t") == "ev" and m.get("ev") == kind and all(m.get(k) == v for k, v in fields.items())


async def test_snapshot_on_attach_shows_every_process_and_names(host: Host) -> None:
    pids = [host.spawn(idle) for _ in range(5)]
    named = host.spawn(idle, name="named")
    client = await connect(host)
    try:
        snap = await client.read_snapshot()
        got = {p["pid"] for p in snap["procs"]}
        assert {str(p) for p in [*pids, named]} <= got
        assert snap["names"]["named"] == str(named)
        rec = next(p for p in snap["procs"] if p["pid"] == str(named))
        assert rec["status"] == "waiting" and rec["label"] == "idle" and rec["mailbox"] == 0
        assert client.welcome["role"] == "operator" and "kill" in client.welcome["commands"]
    finally:
        await client.close()


async def test_lifecycle_events_stream_with_increasing_seq_and_traceback(host: Host) -> None:
    client = await connect(host)
    try:
        await client.read_snapshot()
        pid = host.spawn(idle, name="victim")
        spawn = await next_event(client, ev("spawn", pid=str(pid)))
        host.run(lambda: host.node.send(pid, "crash"))
        exit_ = await next_event(client, ev("exit", pid=str(pid)))
        assert exit_["seq"] > spawn["seq"]
        assert exit_["reason_kind"] == "exception" and exit_["exception"] == "ValueError"
        assert "asked to crash" in exit_["traceback"] and "KeyError" in exit_["traceback"]  # cause chain
        assert "idle" in exit_["traceback"]
    finally:
        await client.close()


async def test_supervisor_restart_and_budget_reach_the_observer(host: Host) -> None:
    async def build() -> actors.Pid:
        return await actors.start_supervisor(host.node, [actors.worker("w", idle)], intensity=3, period=60, name="sup")

    sup = host.run_async(build())
    client = await connect(host)
    try:
        snap = await client.read_snapshot()
        srec = next(p for p in snap["procs"] if p["pid"] == str(sup))
        assert srec["kind"] == "supervisor" and srec["budget"]["intensity"] == 3 and srec["budget"]["used"] == 0
        child = next(p for p in snap["procs"] if p["supervisor"] == str(sup))
        assert child["child_id"] == "'w'" or child["child_id"] == "w"
        await client.command("kill", pid=child["pid"], reason="boom")
        restart = await next_event(client, ev("restart", supervisor=str(sup)))
        assert restart["old_pid"] == child["pid"] and restart["restarts"] == 1
        info = await client.command("inspect", pid=str(sup))
        assert info["budget"]["used"] == 1
        assert [c["pid"] for c in info["children"]] == [restart["new_pid"]]
    finally:
        await client.close()


async def test_samples_carry_counters_of_busy_processes(host: Host) -> None:
    pid = host.spawn(idle)
    client = await connect(host)
    try:
        await client.read_snapshot()
        for _ in range(7):
            host.run(lambda: host.node.send(pid, "hi"))

        def has_row(m: dict[str, Any]) -> bool:
            return m.get("t") == "samples" and any(r[0] == str(pid) and r[2] == 7 for r in m["rows"])

        msg = await next_event(client, has_row)
        assert msg["node"]["process_count"] >= 1 and "loop_lag_ms" in msg["node"]
        (row,) = [r for r in msg["rows"] if r[0] == str(pid)]
        assert len(row) == len(P.SAMPLE_FIELDS)
        memory = row[P.SAMPLE_FIELDS.index("memory")]
        assert isinstance(memory, int) and 500 < memory < 100_000  # a record, a task, a frame or two
    finally:
        await client.close()


# -- authentication ----------------------------------------------------------------------


async def test_wrong_token_is_refused_and_audited(host: Host, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.audit")
    with pytest.raises(AgentError) as err:
        await connect(host, token="not-the-token")
    assert err.value.code == P.E_AUTH_FAILED
    assert any("authentication failed" in r.getMessage() for r in caplog.records)
    assert host.agent.auth_failures == 1


async def test_read_token_cannot_claim_operator_role(host: Host) -> None:
    from tests.agent.conftest import READ_TOKEN

    with pytest.raises(AgentError) as err:
        await connect(host, role="operator", token=READ_TOKEN)
    assert err.value.code == P.E_AUTH_FAILED


async def _raw(host: Host) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", host.agent.port)
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    hello = P.decode_payload(await reader.readexactly(n))
    return reader, writer, hello


async def _read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (n,) = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 5))
    return P.decode_payload(await reader.readexactly(n))


async def test_no_token_and_replayed_handshake_are_refused(host: Host) -> None:
    # no mac at all
    reader, writer, hello = await _raw(host)
    writer.write(
        P.encode_frame({"t": "auth", "version": P.VERSION, "nonce": "a" * 32, "observer": "o", "role": "operator"})
    )
    assert (await _read_frame(reader))["code"] == P.E_AUTH_FAILED
    writer.close()
    # a valid auth for one connection, replayed on another
    reader, writer, hello = await _raw(host)
    good = {
        "t": "auth",
        "version": P.VERSION,
        "nonce": "b" * 32,
        "observer": "o",
        "role": "operator",
        "mac": P.client_mac(
            OP_TOKEN.encode(), hello["nonce"], "b" * 32, "operator", agent_id=hello["agent"], observer_id="o"
        ),
    }
    writer.write(P.encode_frame(good))
    assert (await _read_frame(reader))["t"] == "welcome"
    writer.close()
    reader2, writer2, hello2 = await _raw(host)
    assert hello2["nonce"] != hello["nonce"]
    writer2.write(P.encode_frame(good))
    assert (await _read_frame(reader2))["code"] == P.E_AUTH_FAILED
    writer2.close()


async def test_read_only_session_is_not_offered_and_is_refused_kill(
    host: Host, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.audit")
    pid = host.spawn(idle)
    client = await connect(host, role="read")
    try:
        assert client.welcome["role"] == "read"
        assert not set(P.OPERATOR_COMMANDS) & set(client.welcome["commands"])
        with pytest.raises(AgentError) as err:
            await client.command("kill", pid=str(pid))
        assert err.value.code == P.E_NOT_PERMITTED
        assert host.run(lambda: host.node.is_alive(pid))
        assert any("not permitted" in r.getMessage() for r in caplog.records)
        info = await client.command("info", pid=str(pid))  # reading is allowed
        assert info["pid"] == str(pid)
    finally:
        await client.close()


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">I", P.MAX_INBOUND_FRAME + 1),  # oversized header
        struct.pack(">I", 5) + b"\xff\xfe\x00ab",  # not UTF-8
        struct.pack(">I", 3) + b"[1]",  # JSON, not an object
        struct.pack(">I", 9) + b'{"t": 42}',  # no string t
    ],
)
async def test_garbage_frames_close_that_connection_while_others_are_served(host: Host, garbage: bytes) -> None:
    good = await connect(host)
    try:
        await good.read_snapshot()
        reader, writer, _ = await _raw(host)
        writer.write(garbage)
        err = await _read_frame(reader)
        assert err["t"] == "error" and err["code"] in (P.E_BAD_FRAME, P.E_BAD_HANDSHAKE)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
        writer.close()
        pid = host.spawn(idle)
        await next_event(good, ev("spawn", pid=str(pid)))  # the other observer still served
        assert (await good.command("ping"))["pong"] is True
    finally:
        await good.close()


async def test_garbage_after_auth_closes_only_that_session(host: Host) -> None:
    client = await connect(host)
    other = await connect(host)
    try:
        client.writer.write(struct.pack(">I", 4) + b"nope")
        await asyncio.wait_for(client.closed.wait(), 5)
        assert "bad_frame" in (client.close_reason or "")
        assert (await other.command("ping"))["pong"] is True
    finally:
        await client.close()
        await other.close()


async def test_commands_reply_exactly_once_with_clear_errors(host: Host) -> None:
    client = await connect(host)
    try:
        unknown = await client.request("format_disk", {})
        assert unknown["error"]["code"] == P.E_UNKNOWN_COMMAND
        bad = await client.request("kill", {"pid": 42})
        assert bad["error"]["code"] == P.E_BAD_ARGS
        dead = await client.request("kill", {"pid": "<0.999999.0>"})
        assert dead["error"]["code"] == P.E_NO_SUCH_PROCESS
        notargs = await client.request("info", [1, 2])
        assert notargs["error"]["code"] == P.E_BAD_ARGS
        # many in flight, each answered once
        replies = await asyncio.gather(*(client.request("ping", {}) for _ in range(12)))
        assert all(r["ok"] for r in replies)
    finally:
        await client.close()


# -- commands --------------------------------------------------------------------------------------


async def test_kill_suspend_resume_send_and_mailbox_peek(host: Host) -> None:
    got: list[Any] = []

    async def sink(proc: actors.Process) -> None:
        while True:
            got.append(await proc.receive())

    pid = host.spawn(sink, name="sink")
    client = await connect(host)
    try:
        await client.command("suspend", pid="sink")
        await client.command("send", to="sink", message={"op": "charge", "token": "tok_secret", "items": [1, 2]})
        peek = await client.command("mailbox", pid=str(pid))
        assert peek["messages"][0]["op"] == "charge"
        assert peek["messages"][0]["token"] != "tok_secret" and peek["masked"] >= 1
        assert got == []
        await client.command("resume", pid="sink")
        await asyncio.sleep(0.05)
        assert got == [{"op": "charge", "token": "tok_secret", "items": (1, 2)}]
        res = await client.command("kill", pid=str(pid), reason="operator says so")
        assert res["pid"] == str(pid)
        exit_ = await next_event(client, ev("exit", pid=str(pid)))
        assert exit_["reason"] == "operator says so"
        with pytest.raises(AgentError) as err:
            await client.command("send", to=str(pid), message=1)
        assert err.value.code == P.E_NO_SUCH_PROCESS
    finally:
        await client.close()


async def test_inspect_state_is_redacted_and_has_stack(host: Host) -> None:
    pid = host.run_async(actors.start_server(host.node, Wallet, name="wallet"))
    client = await connect(host)
    try:
        info = await client.command("inspect", pid="wallet")
        assert info["pid"] == str(pid) and info["kind"] == "gen_server"
        state = info["state"]["value"]
        assert state["owner"] == "ada" and state["password"] != "hunter2" and info["state"]["masked"] >= 1
        assert any(f["function"] == "_loop" and f["line"] > 0 for f in info["stack"])
        assert info["memory"] > 0
    finally:
        await client.close()


class Nasty:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class Huge(actors.GenServer):
    async def init(self, *args: Any) -> Any:
        return {"blob": "x" * (100 * 1024 * 1024), "nasty": Nasty(), "items": list(range(1_000_000))}


async def test_state_that_raises_in_repr_or_is_100mb_is_inspected_safely(host: Host) -> None:
    host.run_async(actors.start_server(host.node, Huge, name="huge"))
    client = await connect(host)
    try:
        info = await client.command("inspect", pid="huge", timeout=30)
        assert info["state"]["truncated"] is True
        assert len(str(info["state"]["value"])) < 200_000
    finally:
        await client.close()


async def test_restart_and_terminate_child_commands(host: Host) -> None:
    async def build() -> actors.Pid:
        return await actors.start_supervisor(host.node, [actors.worker("w", idle)], name="sup2")

    sup = host.run_async(build())
    client = await connect(host)
    try:
        assert await client.command("terminate_child", supervisor="sup2", child_id="w") == {"terminated": True}
        rows = host.run_async(actors.which_children(host.node, sup))
        assert rows[0].pid is None
        res = await client.command("restart_child", supervisor="sup2", child_id="w")
        rows = host.run_async(actors.which_children(host.node, sup))
        assert res["pid"] == str(rows[0].pid)
        with pytest.raises(AgentError) as err:
            await client.command("restart_child", supervisor="sup2", child_id="nope")
        assert err.value.code == P.E_BAD_ARGS
    finally:
        await client.close()


async def test_trace_streams_messages_and_stops_when_observer_leaves(host: Host) -> None:
    pid = host.spawn(idle)
    client = await connect(host)
    try:
        await client.command("trace", pids=[str(pid)], on=True)
        host.run(lambda: host.node.send(pid, {"hello": "world"}))
        tr = await next_event(client, ev("trace", pid=str(pid)))
        assert tr["dir"] == "in" and tr["message"] == {"hello": "world"}
    finally:
        await client.close()
    for _ in range(100):
        if not host.run(lambda: host.node.process(pid).traced):
            break
        await asyncio.sleep(0.01)
    assert host.run(lambda: host.node.process(pid).traced) is False


async def test_two_observers_get_the_same_events(host: Host) -> None:
    a, b = await connect(host), await connect(host, role="read")
    try:
        # both snapshots first: a spawn before a session's snapshot is in it, not an event
        await a.read_snapshot()
        await b.read_snapshot()
        pid = host.spawn(idle)
        ea = await next_event(a, ev("spawn", pid=str(pid)))
        eb = await next_event(b, ev("spawn", pid=str(pid)))
        assert ea["seq"] == eb["seq"]
    finally:
        await a.close()
        await b.close()
    for _ in range(100):
        if not host.agent.sessions:
            break
        await asyncio.sleep(0.01)
    assert host.agent.sessions == []


# -- never slow or crash the host -----------------------------------------------------------------


async def test_blocked_host_loop_is_reported_while_blocked(host: Host) -> None:
    done = threading.Event()

    async def hog(proc: actors.Process) -> None:
        while True:
            await proc.receive()
            time.sleep(0.6)  # noqa: ASYNC251 - a handler that hogs the loop, on purpose
            done.set()

    pid = host.spawn(hog, name="hog")
    client = await connect(host)
    try:
        await client.read_snapshot()
        # not host.run(): its reply would only come back after the hog's step
        host.node.loop.call_soon_threadsafe(host.node.send, pid, "go")
        blocked = await next_event(client, ev("loop_blocked"))
        assert not done.is_set(), "the report must arrive while the loop is still blocked"
        assert blocked["pid"] == str(pid) and blocked["name"] == "hog"
        assert any(f["function"].endswith("hog") for f in blocked["stack"])
        res = await client.request("info", {"pid": str(pid)}, timeout=10)
        unblocked = await next_event(client, ev("loop_unblocked"))
        assert unblocked["blocked_ms"] >= 100
        assert res["ok"], "the command queued during the block is answered after it"
    finally:
        await client.close()


async def test_stalled_observer_gets_gap_then_snapshot_and_memory_stays_bounded() -> None:
    h = Host(event_limit=200)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a reader that stalls early
        sock.connect(("127.0.0.1", h.agent.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        hello = P.decode_payload(await reader.readexactly(n))
        nonce = "c" * 32
        writer.write(
            P.encode_frame(
                {
                    "t": "auth",
                    "version": P.VERSION,
                    "observer": "o",
                    "nonce": nonce,
                    "role": "operator",
                    "mac": P.client_mac(
                        OP_TOKEN.encode(), hello["nonce"], nonce, "operator", agent_id=hello["agent"], observer_id="o"
                    ),
                }
            )
        )
        await writer.drain()
        while (await _read_frame(reader))["t"] != "snapshot_end":
            pass
        # from now on never read: the socket buffers fill up and the session stalls

        async def churn() -> None:
            for _ in range(60):
                pids = [h.node.spawn(idle) for _ in range(500)]
                for p in pids:
                    h.node.exit(p, "kill")
                await asyncio.sleep(0)

        h.run_async(churn(), timeout=60)
        s = h.agent.sessions[0]
        assert 0 < s.peak_events <= h.agent.event_limit
        # now read everything: a gap with the count, then a fresh snapshot
        seen_gap = None
        while True:
            msg = await _read_frame(reader)
            if msg["t"] == "gap":
                seen_gap = msg
            if msg["t"] == "snapshot_end" and seen_gap is not None:
                break
        assert seen_gap["dropped"] > h.agent.event_limit
        assert s.peak_events <= h.agent.event_limit
        writer.close()
    finally:
        h.stop()


async def test_agent_start_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    node = actors.Node.start_in_thread()
    try:
        assert agent.start_from_env(node) is None
        tok = tmp_path / "tok"
        tok.write_text("env-token-123456\n")
        monkeypatch.setenv("OBSERVER_AGENT_BIND", "127.0.0.1:0")
        monkeypatch.setenv("OBSERVER_AGENT_TOKEN_FILE", str(tok))
        a = agent.start_from_env(node)
        assert a is not None
        try:
            c = await AgentClient.connect("127.0.0.1", a.port, token="env-token-123456")
            await c.close()
        finally:
            a.stop()
    finally:
        node.stop_thread()


def test_start_from_env_refuses_variables_renamed_in_0_2_with_their_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """An old TLS variable is an error, never ignored: mutual TLS must not be silently off."""
    monkeypatch.setenv("OBSERVER_AGENT_BIND", "127.0.0.1:0")
    monkeypatch.setenv("OBSERVER_AGENT_TOKEN", "env-token-123456")
    monkeypatch.setenv("OBSERVER_AGENT_TLS_CLIENT_CA", "/etc/ca.pem")
    monkeypatch.setenv("OBSERVER_DIAL_CERT", "/etc/cert.pem")
    node = actors.Node.start_in_thread()
    try:
        with pytest.raises(ValueError) as err:
            agent.start_from_env(node)
        msg = str(err.value)
        assert "OBSERVER_AGENT_TLS_CLIENT_CA is now OBSERVER_AGENT_TLS_CA" in msg
        assert "OBSERVER_DIAL_CERT is now OBSERVER_DIAL_TLS_CERT" in msg
    finally:
        node.stop_thread()


async def _churn(proc: actors.Process) -> None:
    while True:
        child = proc.node.spawn(idle)
        proc.node.exit(child, "kill")
        await asyncio.sleep(0.001)


async def test_events_never_interleave_with_snapshot_chunks(host: Host) -> None:
    """Events queued while a multi-chunk snapshot is written wait for its end
    (the drain's direct write must not slip them between the chunks). A slow
    reader with a tiny receive buffer makes the snapshot writer pause between
    chunks while the node churns."""
    host.run(lambda: [host.node.spawn(idle, name=f"p{i}") for i in range(5000)])  # 3 chunks of 2,000
    host.spawn(_churn)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", host.agent.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    try:
        hello = await _read_frame(reader)
        writer.write(
            P.encode_frame(
                {
                    "t": "auth",
                    "version": P.VERSION,
                    "observer": "o",
                    "nonce": "c" * 32,
                    "role": "operator",
                    "mac": P.client_mac(
                        OP_TOKEN.encode(),
                        hello["nonce"],
                        "c" * 32,
                        "operator",
                        agent_id=hello["agent"],
                        observer_id="o",
                    ),
                }
            )
        )
        assert (await _read_frame(reader))["t"] == "welcome"
        first = await _read_frame(reader)
        assert first["t"] == "snapshot_begin"
        seen: list[str] = []
        while seen[-1:] != ["snapshot_end"]:
            await asyncio.sleep(0.002)  # slow reader: the agent's buffer fills, its writer waits
            seen.append((await _read_frame(reader))["t"])
        assert seen.count("snapshot_chunk") >= 3
        assert set(seen) <= {"snapshot_chunk", "snapshot_end", "samples"}, seen
        while (msg := await _read_frame(reader))["t"] != "ev":
            pass
        assert msg["seq"] > first["seq"]
    finally:
        writer.close()


async def _late_trapper(proc: actors.Process) -> None:
    await proc.receive()
    proc.trap_exit = True  # meta that changes right after the spawn went out
    await proc.receive()


async def test_a_fresh_process_whose_meta_changes_gets_an_update_before_the_next_sample() -> None:
    """The sampler runs every 5 s here: the update comes from the re-check of
    recent spawns (a supervisor is a worker without a budget until its loop runs)."""
    h = Host(sample_hz=0.2)
    client = await connect(h)
    try:
        await client.read_snapshot()
        pid = h.spawn(_late_trapper)
        spawn = await next_event(client, ev("spawn", pid=str(pid)))
        assert spawn["trap_exit"] is False
        h.run(lambda: h.node.send(pid, "go"))
        update = await next_event(client, ev("update", pid=str(pid)), timeout=2.0)
        assert update["trap_exit"] is True
    finally:
        await client.close()
        h.stop()

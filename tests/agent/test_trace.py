"""Trace sessions end to end: a real node thread, a real agent, real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import actors
from agent.client import AgentClient, AgentError
from tests.agent.conftest import Host, connect


class Payments(actors.GenServer):
    async def init(self, *args: Any) -> Any:
        return 0

    async def handle_call(self, request: Any, from_: actors.From, state: Any) -> Any:
        return actors.Reply({"ok": True, "n": state + 1, "token": "sekrit-reply"}, state + 1)


async def idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


async def caller(proc: actors.Process, server: actors.Pid, n: int) -> None:
    await proc.receive()  # "go"
    for i in range(n):
        await proc.call(server, {"charge": i, "card": "4111-1111"})
    await proc.receive()


def _start_server(host: Host) -> actors.Pid:
    return host.run_async(actors.start_server(host.node, Payments, name="payments"))  # type: ignore[no-any-return]


async def frames(client: AgentClient, tid: str, *, until_end: bool = True, n: int = 0, timeout: float = 10.0) -> Any:
    """The trace's arrows and its end reason, read until it ends (or ``n`` arrows)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    msgs: list[dict[str, Any]] = []
    last: dict[str, Any] = {}
    while True:
        left = deadline - loop.time()
        assert left > 0, f"trace {tid} did not end in time ({len(msgs)} arrows)"
        m = await client.next_message(left)
        if m.get("t") != "trace" or m.get("trace") != tid:
            continue
        msgs.extend(m["msgs"])
        last = m
        if "end" in m or (not until_end and len(msgs) >= n):
            return msgs, last


async def test_calls_and_replies_are_paired_with_both_ends_traced(host: Host) -> None:
    server = _start_server(host)
    c = host.spawn(caller, server, 3)
    client = await connect(host)
    try:
        got = await client.command("trace", id="t1", pids=[str(server), str(c)], max_msgs=7, duration=10)
        assert got["trace"] == "t1" and set(got["pids"]) == {str(server), str(c)}
        assert got["names"][str(server)] == "payments"
        host.run(lambda: host.node.send(c, "go"))
        msgs, last = await frames(client, "t1")
        assert last["end"] == "msgs" and last["count"] == 7
        assert (msgs[0]["kind"], msgs[0]["from"], msgs[0]["to"], msgs[0]["msg"]) == ("send", None, str(c), "go")
        kinds = [(m["kind"], m["from"], m["to"]) for m in msgs if m["kind"] in ("call", "reply")]
        # one arrow per message: the call seen at both ends is drawn once
        assert kinds == [("call", str(c), str(server)), ("reply", str(server), str(c))] * 3
        calls = [m for m in msgs if m["kind"] == "call"]
        replies = [m for m in msgs if m["kind"] == "reply"]
        assert [r["call"] for r in replies] == [x["call"] for x in calls]
        assert all(r["latency_ms"] is not None and r["latency_ms"] >= 0 for r in replies)
        # redacted with the agent's rules, both ways
        assert calls[0]["msg"]["card"] == "***" and calls[0]["masked"] >= 1
        assert replies[0]["msg"]["token"] == "***" and replies[0]["msg"]["n"] == 1
    finally:
        await client.close()
    assert host.run(lambda: host.node.process(server).traced) is False


async def test_only_the_server_traced_still_pairs_calls_from_outside(host: Host) -> None:
    server = _start_server(host)
    c = host.spawn(caller, server, 2)
    client = await connect(host)
    try:
        await client.command("trace", id="srv", pids=["payments"], max_msgs=4)
        host.run(lambda: host.node.send(c, "go"))
        msgs, _ = await frames(client, "srv")
        assert [(m["kind"], m["from"], m["to"]) for m in msgs] == [
            ("call", None, str(server)),
            ("reply", str(server), None),
        ] * 2
        assert msgs[1]["call"] == msgs[0]["call"] and msgs[1]["latency_ms"] is not None
    finally:
        await client.close()


async def test_direction_in_keeps_what_the_traced_process_receives(host: Host) -> None:
    a = host.spawn(idle)

    async def chatty(proc: actors.Process) -> None:
        await proc.receive()
        for i in range(3):
            proc.send(a, ("ping", i))
        await proc.receive()

    b = host.spawn(chatty)
    client = await connect(host)
    try:
        await client.command("trace", id="in", pids=[str(b)], dir="in", max_msgs=1)
        host.run(lambda: host.node.send(b, "go"))
        msgs, last = await frames(client, "in")
        assert last["end"] == "msgs"
        assert [(m["kind"], m["from"], m["to"], m["msg"]) for m in msgs] == [("send", None, str(b), "go")]
    finally:
        await client.close()


async def test_the_rate_limit_stops_the_trace_and_counts_the_dropped(host: Host) -> None:
    a = host.spawn(idle)

    async def flood(proc: actors.Process) -> None:
        await proc.receive()
        for i in range(50):
            proc.send(a, i)
        await proc.receive()

    b = host.spawn(flood)
    client = await connect(host)
    try:
        await client.command("trace", id="rate", pids=[str(b)], dir="out", max_rate=10, max_msgs=1000)
        host.run(lambda: host.node.send(b, "go"))
        msgs, last = await frames(client, "rate")
        assert last["end"] == "rate" and len(msgs) == 10 and last["dropped"] >= 1
    finally:
        await client.close()
    assert host.run(lambda: host.node.process(b).traced) is False


async def test_duration_and_death_end_a_trace(host: Host) -> None:
    a = host.spawn(idle)
    b = host.spawn(idle)
    client = await connect(host)
    try:
        await client.command("trace", id="short", pids=[str(a)], duration=0.2)
        _, last = await frames(client, "short")
        assert last["end"] == "duration"
        await client.command("trace", id="dies", pids=[str(b)], duration=60)
        host.run(lambda: host.node.exit(b, "kill"))
        _, last = await frames(client, "dies")
        assert last["end"] == "exited"
    finally:
        await client.close()


async def test_stop_command_and_bad_arguments(host: Host) -> None:
    a = host.spawn(idle)
    client = await connect(host)
    try:
        await client.command("trace", id="s", pids=[str(a)])
        try:
            await client.command("trace", id="s", pids=[str(a)])
            raise AssertionError("a second start with the same id was accepted")
        except AgentError as exc:
            assert exc.code == "bad_args"
        stopped = await client.command("trace", id="s", on=False)
        assert stopped["end"] == "stopped"
        for bad in ({"dir": "sideways"}, {"max_msgs": 0}, {"duration": -1}, {"max_rate": "x"}):
            try:
                await client.command("trace", id="b", pids=[str(a)], **bad)
                raise AssertionError(f"accepted {bad}")
            except AgentError as exc:
                assert exc.code == "bad_args"
        try:
            await client.command("trace", id="gone", pids=["<0.99999.0>"])
            raise AssertionError("traced a dead pid")
        except AgentError as exc:
            assert exc.code == "no_such_process"
    finally:
        await client.close()


async def test_untraced_processes_stay_untraced_and_a_closed_session_ends_its_traces(host: Host) -> None:
    a = host.spawn(idle)
    other = host.spawn(idle)
    client = await connect(host)
    await client.command("trace", id="x", pids=[str(a)], duration=60)
    assert host.run(lambda: host.node.process(a).traced) is True
    assert host.run(lambda: host.node.process(other).traced) is False
    await client.close()
    for _ in range(500):  # the flag is turned off on the host loop once the agent saw the close
        if not host.run(lambda: host.node.process(a).traced):
            break
        await asyncio.sleep(0.01)
    assert host.run(lambda: host.node.process(a).traced) is False
    assert host.agent.tracer.traces == {}


async def test_casts_are_told_apart_and_drawn_once(host: Host) -> None:
    server = _start_server(host)

    async def caster(proc: actors.Process) -> None:
        await proc.receive()
        proc.cast(server, {"refund": 1, "password": "pw"})
        await proc.receive()

    c = host.spawn(caster)
    client = await connect(host)
    try:
        await client.command("trace", id="cast", pids=[str(c), str(server)], dir="out", max_msgs=1)
        host.run(lambda: host.node.send(c, "go"))
        msgs, _ = await frames(client, "cast")
        assert [(m["kind"], m["from"], m["to"]) for m in msgs] == [("cast", str(c), str(server))]
        assert msgs[0]["msg"]["password"] == "***"
    finally:
        await client.close()


async def test_a_read_only_session_may_run_a_bounded_trace_only(host: Host) -> None:
    a = host.spawn(idle)
    client = await connect(host, role="read")
    try:
        got = await client.command("trace", id="ro", pids=[str(a)], max_msgs=1)
        assert got["pids"] == [str(a)]
        try:
            await client.command("trace", pids=[str(a)], on=True)
            raise AssertionError("a read-only session started an unbounded trace")
        except AgentError as exc:
            assert exc.code == "not_permitted"
    finally:
        await client.close()

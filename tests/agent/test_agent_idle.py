"""An agent nobody watches costs its node nothing: no instrument (so the node
builds no event and no crash report), no drain, no watchdog timer on the
agent's thread; the first observer to attach installs the hooks before its
snapshot, so it misses nothing, and the last to leave removes them. Real node
thread, real agent, real sockets."""

from __future__ import annotations

import asyncio
import selectors
import threading
import time
from typing import Any

import pytest

import actors
from agent._alarm import Alarm
from tests.agent.conftest import Host, connect, next_event
from tests.conftest import wait_until


async def _crasher(proc: actors.Process) -> None:
    await proc.receive()
    raise RuntimeError("boom")


def _crash_one(h: Host) -> actors.Pid:
    pid = h.spawn(_crasher)
    h.run(lambda: h.node.send(pid, "go"))
    return pid


async def test_an_idle_agent_sees_no_event_until_an_observer_attaches_and_none_after_it_leaves(host: Host) -> None:
    c = host.agent.collector
    for _ in range(5):
        _crash_one(host)
    await wait_until(lambda: host.run(lambda: host.node.process_count()) == 0, what="the crashers gone")
    assert c.accepted == 0 and host.agent.crashes == 0, "no instrument while nobody is attached"
    assert host.agent.watchdog_wakes == 0, "no timer wakes the agent's thread while nobody is attached"

    client = await connect(host)
    try:
        snap = await client.read_snapshot()
        assert snap is not None
        pid = _crash_one(host)  # the first event after the snapshot reaches the observer
        spawn = await next_event(client, lambda m: m.get("ev") == "spawn" and m["pid"] == str(pid))
        assert spawn["seq"] > 0
        ex = await next_event(client, lambda m: m.get("ev") == "exit" and m["pid"] == str(pid))
        assert ex["reason_kind"] == "exception" and ex["report"] is not None
    finally:
        await client.close()
    await wait_until(lambda: not host.agent.sessions, what="the session closed")
    await wait_until(lambda: not host.agent._hooked, what="the hooks removed")
    accepted = c.accepted
    _crash_one(host)
    await wait_until(lambda: host.run(lambda: host.node.process_count()) == 0, what="the crasher gone")
    assert c.accepted == accepted, "no instrument once the last observer has left"


async def test_an_observer_attaching_while_the_loop_is_blocked_gets_its_snapshot_and_the_block(host: Host) -> None:
    started, release = threading.Event(), threading.Event()

    async def hog(proc: actors.Process) -> None:
        await proc.receive()
        started.set()
        release.wait(5)  # a handler that blocks the loop, on purpose, until the test lets go

    pid = host.spawn(hog, name="hog")
    host.node.loop.call_soon_threadsafe(host.node.send, pid, "go")
    assert started.wait(5)
    try:
        client = await connect(host)  # the handshake runs on the agent's thread
        try:
            snap: Any = await client.read_snapshot()  # the hooks installed from the agent's thread
            assert snap is not None
            blocked = await next_event(client, lambda m: m.get("ev") == "loop_blocked")
            assert blocked["pid"] == str(pid)
            t0 = time.monotonic()
            release.set()
            await next_event(client, lambda m: m.get("ev") == "loop_unblocked")
            assert time.monotonic() - t0 < 5
        finally:
            await client.close()
    finally:
        release.set()


async def _blocked_report_while_blocked(h: Host) -> None:
    started, release = threading.Event(), threading.Event()

    async def hog(proc: actors.Process) -> None:
        await proc.receive()
        started.set()
        release.wait(5)

    pid = h.spawn(hog, name="hog")
    client = await connect(h)
    try:
        await client.read_snapshot()
        h.node.loop.call_soon_threadsafe(h.node.send, pid, "go")
        assert started.wait(5)
        try:
            blocked = await next_event(client, lambda m: m.get("ev") == "loop_blocked")
            assert not release.is_set() and blocked["pid"] == str(pid)
        finally:
            release.set()
        await next_event(client, lambda m: m.get("ev") == "loop_unblocked")
    finally:
        await client.close()


async def test_with_the_alarm_a_block_is_reported_while_blocked(host: Host) -> None:
    if host.agent._alarm is None:
        pytest.skip("no timerfd on this platform (the timer fallback is tested below)")
    await _blocked_report_while_blocked(host)


async def test_without_the_alarm_a_timer_of_the_agent_loop_reports_a_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Alarm, "create", classmethod(lambda cls: None))  # as on a platform without timerfd
    h = Host()
    try:
        assert h.agent._alarm is None
        await _blocked_report_while_blocked(h)
    finally:
        h.stop()


def test_the_alarm_fires_once_its_deadline_passes_and_not_while_pushed_back() -> None:
    alarm = Alarm.create()
    if alarm is None:
        pytest.skip("no timerfd on this platform")
    try:
        sel = selectors.DefaultSelector()
        sel.register(alarm.fd, selectors.EVENT_READ)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # pushed back, as the host's ticks do
            alarm.arm(0.5)
            assert sel.select(0.01) == []
        alarm.arm(0.05)
        assert sel.select(2) != [], "expired 50 ms after the last push"
        alarm.clear()
        alarm.arm(0)  # disarmed
        assert sel.select(0.1) == []
        sel.close()
    finally:
        alarm.close()


async def _one_crash_then_idle(proc: actors.Process) -> None:
    if await proc.receive() == "crash":
        raise RuntimeError("boom")


async def test_the_totals_count_what_happened_while_nobody_was_attached(host: Host) -> None:
    """No instrument while unwatched, yet an observer attaching later sees the
    node's true totals: the runtime counts restarts and crashes itself."""
    for _ in range(3):
        _crash_one(host)
    node = host.node
    sup = await asyncio.to_thread(
        host.run_async, actors.start_supervisor(node, [actors.worker("w", _one_crash_then_idle)], intensity=10)
    )
    rows = await asyncio.to_thread(host.run_async, actors.which_children(node, sup))
    host.run(lambda: node.send(rows[0].pid, "crash"))
    await wait_until(lambda: host.node.restarts_total == 1, what="the child restarted")
    assert host.node.crashes_total == 4
    assert host.agent.collector.accepted == 0, "still no instrument"

    client = await connect(host)
    try:
        assert await client.read_snapshot() is not None
        msg = await next_event(client, lambda m: m.get("t") == "samples")
        assert msg["node"]["crashes"] == 4 and msg["node"]["restarts"] == 1
    finally:
        await client.close()

"""The quick operator commands answered from the host's loop (agent/_quick.py,
issue 17): the reply to a ``kill`` is written from the host's thread while the
agent's thread is parked, so the command costs the agent's loop one wake-up
(reading it) instead of two; a blocked host loop still gets its ``timeout``
answer, exactly once, and the command is then not run. Real node in its own
thread, real agent, real sockets."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

import actors
from agent._host_drain import LockedSelector
from tests.agent.conftest import Host, connect, next_event
from tests.conftest import wait_until

KILLS = 100


async def _idle(proc: actors.Process) -> None:
    await proc.receive()


def _wakes(h: Host) -> int:
    loop = h.agent._loop
    assert loop is not None
    sel = loop._selector  # type: ignore[attr-defined]
    assert isinstance(sel, LockedSelector)
    return sel.wakes


async def _kill_all(h: Host, client: Any, quick: bool) -> float:
    """Agent-loop wake-ups per kill, ``KILLS`` kills one after another."""
    cmds = h.agent.commands
    saved = cmds.quick
    if not quick:
        cmds.quick = {}  # the agent-loop path: the host's result handed back to the agent's loop
    try:
        pids = [h.spawn(_idle) for _ in range(KILLS)]
        wakes0 = _wakes(h)
        for pid in pids:
            res = await client.command("kill", pid=str(pid), reason="kill")
            assert res == {"pid": str(pid), "reason": "kill"}
        return (_wakes(h) - wakes0) / KILLS
    finally:
        cmds.quick = saved


async def test_kill_replies_are_written_on_the_host_without_waking_the_agent(host: Host) -> None:
    client = await connect(host)
    try:
        await client.read_snapshot()
        cmds = host.agent.commands
        replies0 = cmds.host_replies
        # interleaved A/B, twice each (the agent's own timers add a few wake-ups either way)
        old = [await _kill_all(host, client, quick=False)]
        new = [await _kill_all(host, client, quick=True)]
        old.append(await _kill_all(host, client, quick=False))
        new.append(await _kill_all(host, client, quick=True))
        written = cmds.host_replies - replies0
        print(f"agent-loop wake-ups per kill: agent-loop replies {old}, host-written replies {new}; written {written}")
        # a reply whose host callback runs while the agent's thread is still
        # busy (not yet back in select) is handed over as before: that costs no
        # wake-up (the agent is awake), so only some are written on the host
        assert written > 0, "no reply written on the host's thread"
        assert max(new) <= 1.2, f"a kill should wake the agent's loop once (to read it): {new}"
        assert min(old) >= max(new) + 0.2, f"the agent-loop path wakes it for the result too: {old} vs {new}"
        # the kills' exits still reach the observer, and the session's slots were all given back
        # (the host's thread gives the slot back right after its write: not before the reply is read)
        await wait_until(lambda: host.agent.sessions[0].inflight == 0, what="every slot given back")
        assert (await client.command("ping"))["pong"] is True
    finally:
        await client.close()


async def test_errors_and_refusals_are_unchanged(host: Host, caplog: pytest.LogCaptureFixture) -> None:
    pid = host.spawn(_idle)
    client = await connect(host)
    reader = await connect(host, role="read")
    try:
        await client.read_snapshot()
        caplog.set_level(logging.INFO, logger="agent.audit")
        dead = await client.request("kill", {"pid": "<0.999999.0>"})
        assert dead["ok"] is False and dead["error"]["code"] == "no_such_process"
        bad = await client.request("send", {"to": str(pid)})
        assert bad["ok"] is False and bad["error"]["code"] == "bad_args"
        refused = await reader.request("kill", {"pid": str(pid)})
        assert refused["ok"] is False and refused["error"]["code"] == "not_permitted"
        assert (await client.command("suspend", pid=str(pid)))["suspended"] is True
        assert (await client.command("resume", pid=str(pid)))["resumed"] is True
        assert (await client.command("send", to=str(pid), message=["x", 1]))["sent"] is True
        ev = await next_event(client, lambda m: m.get("ev") == "exit" and m["pid"] == str(pid))
        assert ev["reason"] == "normal"  # the message it waited for arrived (as a tuple)
        lines = [r.getMessage() for r in caplog.records if r.name == "agent.audit"]
        assert any(f"send to={pid}" in s and s.endswith("error bad_args") for s in lines), lines
        assert any(s.startswith("agent: refused kill") for s in lines), lines
        assert any(f"send to={pid}" in s and s.endswith(": ok") for s in lines), lines
    finally:
        await reader.close()
        await client.close()


async def test_a_blocked_host_loop_still_gets_one_timeout_and_the_kill_is_not_run() -> None:
    before = set(threading.enumerate())
    h = Host(command_timeout=0.3)
    release = threading.Event()
    blocked = threading.Event()
    try:
        pid = h.spawn(_idle)
        client = await connect(h)
        try:
            await client.read_snapshot()
            cmds = h.agent.commands
            answers0 = cmds.host_answers

            def hog() -> None:
                blocked.set()
                release.wait(10)

            h.node.loop.call_soon_threadsafe(hog)
            assert blocked.wait(5)
            try:
                res = await client.request("kill", {"pid": str(pid)}, timeout=5)
                assert res["ok"] is False and res["error"]["code"] == "timeout"
            finally:
                release.set()
            h.run(lambda: None)  # the host's loop has run the late callback by now
            assert cmds.host_answers == answers0, "a timed-out command must not be run (nor answered) later"
            assert h.run(lambda: h.node.process(pid).alive)
            await wait_until(lambda: h.agent.sessions[0].inflight == 0, what="the slot given back")
            assert (await client.command("kill", pid=str(pid)))["pid"] == str(pid)
        finally:
            await client.close()
    finally:
        release.set()
        h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"

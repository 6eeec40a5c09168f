"""Several events per frame (the ``batch`` feature), negotiated in the
handshake: an observer that asks gets ``batch`` frames in a storm, one that
does not (an older observer) gets one ``ev`` frame per event, and both read
the same events in the same order. Real agent, real sockets, a recording
proxy in between (tests/agent/test_schema.py's Tap)."""

from __future__ import annotations

import asyncio
from typing import Any

import actors
from agent import protocol as P
from agent.client import AgentClient
from tests.agent.conftest import OP_TOKEN, Host
from tests.agent.test_schema import Tap


async def _idle(proc: actors.Process) -> None:
    await proc.receive()


async def _attach(port: int, features: tuple[str, ...]) -> tuple[Tap, AgentClient]:
    tap = Tap(port)
    tap_port = await tap.start()
    client = await AgentClient.connect("127.0.0.1", tap_port, token=OP_TOKEN, features=features)
    await client.read_snapshot()
    return tap, client


async def _exits(client: AgentClient, n: int) -> list[int]:
    """The seq of the next ``n`` exit events this client reads."""
    seqs: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(seqs) < n:
        msg = await client.next_message(max(0.01, deadline - loop.time()))
        if msg.get("t") == "ev" and msg["ev"] == "exit":
            P.read_push(msg)
            seqs.append(msg["seq"])
    return seqs


async def test_a_storm_goes_several_events_a_frame_only_to_observers_that_asked(host: Host) -> None:
    new_tap, new = await _attach(host.agent.port, P.FEATURES)
    old_tap, old = await _attach(host.agent.port, ())
    try:
        assert new.welcome.get("features") == [P.FEATURE_BATCH]
        assert "features" not in old.welcome  # an older observer's welcome is as it was

        def storm() -> None:  # 500 spawns and 500 exits in one step of the host loop
            for p in [host.node.spawn(_idle) for _ in range(500)]:
                host.node.exit(p, "kill")

        host.run(storm)
        a, b = await _exits(new, 500), await _exits(old, 500)
        assert a == b and a == sorted(a)
        new_frames = [f for who, f in new_tap.frames if who == "agent"]
        old_frames = [f for who, f in old_tap.frames if who == "agent"]
        batches: list[dict[str, Any]] = [f for f in new_frames if f["t"] == "batch"]
        assert batches and max(len(f["evs"]) for f in batches) > 1
        assert all(len(f["evs"]) <= 256 for f in batches)
        assert not [f for f in old_frames if f["t"] == "batch"]
        assert len([f for f in old_frames if f["t"] == "ev" and f["ev"] == "exit"]) >= 500
    finally:
        for c in (new, old):
            await c.close()
        for t in (new_tap, old_tap):
            await t.close()

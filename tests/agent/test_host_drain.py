"""The per-batch work on the host's own thread (agent/_host_drain.py): with an
observer attached, each batch is encoded and written from the host loop's
hand-off callback while the agent's thread is parked in ``select`` (no wait
for it); the replaced design (``host_drain=False``) still serves the same
events. Real node in its own thread, real agent, real sockets."""

from __future__ import annotations

import threading

import pytest

import actors
from tests.agent.conftest import Host, connect, next_event
from tests.conftest import wait_until


async def _crasher(proc: actors.Process) -> None:
    await proc.receive()
    raise RuntimeError("boom")


@pytest.mark.parametrize("host_drain", [True, False])
async def test_each_batch_reaches_the_observer_in_either_design(host_drain: bool) -> None:
    before = set(threading.enumerate())
    h = Host(host_drain=host_drain)
    try:
        client = await connect(h)
        try:
            await client.read_snapshot()
            c = h.agent.collector
            drains0, waits0 = c.host_drains, c.handoff_waits
            for _ in range(5):
                pid = h.spawn(_crasher)
                h.run(lambda pid=pid: h.node.send(pid, "go"))
                ev = await next_event(client, lambda m, pid=pid: m.get("ev") == "exit" and m["pid"] == str(pid))
                assert ev["reason_kind"] == "exception" and ev["report"] is not None
            if host_drain:
                # drained and written on the host's thread (a batch that comes
                # while the agent's thread is busy, its tick say, falls back to
                # the hand-off: not every one, so not asserted for each)
                assert c.host_drains > drains0
                # and the heartbeat's work (sampling, re-checks) too, without a hand-off
                await wait_until(lambda: c.host_ticks >= 3, what="three ticks' work on the host")
                samples = await next_event(client, lambda m: m.get("t") == "samples")  # sampled on the host
                assert isinstance(samples["rows"], list)
            else:
                assert c.host_drains == 0 and c.host_ticks == 0 and c.handoff_waits > waits0
            assert (await client.command("ping"))["pong"] is True
        finally:
            await client.close()
    finally:
        h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"

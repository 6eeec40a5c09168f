"""The host-side collector: what it may cost the actor system."""

from __future__ import annotations

import asyncio
from typing import Any

import actors
from agent._collector import Collector
from tests.conftest import wait_until


async def test_a_stuck_agent_costs_the_host_at_most_the_handoff_budget() -> None:
    # an agent that never drains (stuck, or starved for good): every hand-off
    # waits its full timeout and retries; the budget must still cap the total
    loop = asyncio.get_running_loop()
    c = Collector(lambda: None, host_loop=loop, handoff_timeout=0.004, handoff_delay=0.001, handoff_budget=0.05)
    c.handoff_enabled = True
    ev: Any = actors.Suspended(actors.Pid(0, 1), 0.0)
    t0 = loop.time()
    while loop.time() - t0 < 1.5:
        c.put(ev)
        await asyncio.sleep(0.001)
    elapsed = loop.time() - t0
    assert c.handoff_waits > 0 and c.handoff_skipped > 0
    # 5% of each 0.1 s window (each wait is cut to what is left of it), plus slack for late wake-ups
    assert c.handoff_wait_s <= 0.05 * (elapsed + 1) + 0.004 * 3


async def test_unobserved_collector_never_schedules_a_handoff() -> None:
    loop = asyncio.get_running_loop()
    woken: list[int] = []
    c = Collector(lambda: woken.append(1), host_loop=loop)
    ev: Any = actors.Suspended(actors.Pid(0, 1), 0.0)
    for _ in range(1000):
        c.put(ev)
    await asyncio.sleep(0.02)
    assert c.handoffs == 0 and woken == [] and len(c.buf) == 1000


def test_events_past_the_limit_are_counted_not_kept() -> None:
    c = Collector(lambda: None, limit=10)
    ev: Any = actors.Suspended(actors.Pid(0, 1), 0.0)
    for _ in range(25):
        c.put(ev)
    assert len(c.buf) == 10 and c.dropped == 15


async def test_past_its_budget_the_host_wakes_the_agent_but_does_not_wait() -> None:
    # events stay timely (the agent takes the GIL when the host lets it go),
    # and the host's waits stay within the budget
    loop = asyncio.get_running_loop()
    woken: list[int] = []
    c = Collector(
        lambda: woken.append(1), host_loop=loop, handoff_timeout=0.004, handoff_delay=0.001, handoff_budget=0.0
    )
    c.handoff_enabled = True
    ev: Any = actors.Suspended(actors.Pid(0, 1), 0.0)
    c.put(ev)
    await wait_until(lambda: c.handoffs == 1, what="the hand-off")
    assert c.handoffs == 1 and c.handoff_skipped == 1
    assert woken == [1] and c.handoff_waits == 0 and c.handoff_wait_s == 0.0

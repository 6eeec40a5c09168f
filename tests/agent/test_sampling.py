"""The sampling sweep in steps (agent/_sampling.py): a real node thread, a real agent, real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

import actors
from agent import _sampling
from tests.agent.conftest import Host, connect, next_event


async def idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


def _ready_work(loop: asyncio.AbstractEventLoop, end: float) -> asyncio.Future[None]:
    """A callback that queues itself again (``call_soon``: always one ready) until ``end``."""
    done: asyncio.Future[None] = loop.create_future()

    def again() -> None:
        if loop.time() < end:
            loop.call_soon(again)
        else:
            done.set_result(None)

    loop.call_soon(again)
    return done


def _samples(m: dict[str, Any]) -> bool:
    return m.get("t") == "samples"


@pytest.mark.parametrize("host_drain", [True, False], ids=["steps-on-the-host-loop", "a-step-per-tick"])
async def test_a_sweep_in_many_steps_reaches_the_observer_as_one_sample(
    monkeypatch: pytest.MonkeyPatch, host_drain: bool
) -> None:
    """With no time for more than one clock check per step, a sweep of 300
    processes takes ~10 steps (one after the other on the host's loop; with
    ``host_drain=False``, one per tick); every changed row of the sweep still
    comes in one ``samples`` message with the node's figures, so the
    observer's rates stay consistent."""
    monkeypatch.setattr(_sampling, "STEP_S", 0.0)
    h = Host(sample_hz=4, host_drain=host_drain)
    try:
        pids = [h.spawn(idle) for _ in range(300)]
        client = await connect(h)
        try:
            await client.read_snapshot()
            await next_event(client, _samples)  # the first sweep: every process's first row
            keys = {str(p) for p in pids}
            h.run(lambda: [h.node.send(p, "hi") for p in pids])

            def all_rows(m: dict[str, Any]) -> bool:
                return _samples(m) and keys <= {r[0] for r in m["rows"] if r[2] == 1}

            msg = await next_event(client, all_rows, timeout=10.0)
            assert msg["node"] is not None and msg["node"]["process_count"] >= 300
            assert msg["node"]["messages"] == 300
            assert h.agent.sample_steps >= 2 * math.ceil(300 / _sampling.STEP_CHECK)
        finally:
            await client.close()
    finally:
        h.stop()


async def test_a_step_samples_a_slice_and_drops_the_rows_of_processes_dead_by_the_end() -> None:
    """``_scan_step(0)``: one slice of ``STEP_CHECK`` processes per call; the
    sweep's rows come at its end, without the processes that exited meanwhile
    (sampled before their exit, or not at all)."""
    h = Host(sample_hz=0.01)  # the agent's own sweeps: one at attach, the next in 100 s
    try:
        for _ in range(100):
            h.spawn(idle)
        client = await connect(h)
        try:
            await client.read_snapshot()
            await next_event(client, _samples)
            ag = h.agent
            n = h.run(lambda: len(h.node.processes()))

            async def hi_to_all() -> None:
                for p in h.node.processes():
                    h.node.send(p, "hi")
                await asyncio.sleep(0.05)

            h.run_async(hi_to_all())  # every row changes
            assert h.run(lambda: ag._scan_step(0)) is None
            procs = ag._sweep.procs if ag._sweep is not None else []
            early, late = procs[1].pid, procs[-1].pid  # sampled in the first step / not yet sampled

            for pid in (early, late):
                await client.command("kill", pid=str(pid), reason="kill")
                await next_event(client, lambda m, k=str(pid): m.get("ev") == "exit" and m.get("pid") == k)
            steps = 1
            out = None
            while out is None:
                out = h.run(lambda: ag._scan_step(0))
                steps += 1
            assert steps == math.ceil(n / _sampling.STEP_CHECK)
            rows, msgs = out
            got = {r[0] for r in rows}
            assert str(early) not in got and str(late) not in got
            assert len(got) == n - 2
            assert msgs == n - 1  # the one killed after it was sampled got its message; the other was not sampled
        finally:
            await client.close()
    finally:
        h.stop()


@contextlib.asynccontextmanager
async def _sweeping(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Host]:
    """A node of 3,000 idle processes whose agent samples in sweeps of one slice a step
    (``STEP_S`` 0), with an observer attached that has read its snapshot and first samples."""
    monkeypatch.setattr(_sampling, "STEP_S", 0.0)  # one slice of STEP_CHECK processes per step
    h = Host(sample_hz=20)
    try:
        h.run(lambda: [h.node.spawn(idle) for _ in range(3000)])
        client = await connect(h)
        try:
            await client.read_snapshot()
            await next_event(client, _samples)
            yield h
        finally:
            await client.close()
    finally:
        h.stop()


async def test_the_host_loop_runs_several_iterations_between_two_steps_of_a_sweep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step of a sweep is a timer a step's length after the last one (at
    least ``STEP_GAP_MIN_S``), not a ready callback: what takes a few
    iterations of the host's loop (a gen_server's restart takes five) runs
    between two steps instead of paying one step per iteration, as it did
    when every iteration of a sweep ran a step."""
    async with _sweeping(monkeypatch) as h:
        ag = h.agent

        async def chains() -> list[int]:
            """Steps taken during each of 40 chains of five loop iterations, each begun in a sweep."""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20.0
            seen: list[int] = []
            while len(seen) < 40 and loop.time() < deadline:
                if ag._sweep_since is None:
                    await asyncio.sleep(0.002)
                    continue
                before = ag.sample_steps
                for _ in range(5):
                    await asyncio.sleep(0)
                seen.append(ag.sample_steps - before)
                await asyncio.sleep(0.0003)
            return seen

        seen = h.run_async(chains(), timeout=30.0)
        assert len(seen) == 40, f"only {len(seen)} chains began in a sweep"
        # one step per iteration would be ~5 a chain; a gap of >= 0.5 ms between steps leaves
        # most chains of five quick iterations without any
        assert sum(seen) <= len(seen) // 2, seen


async def test_a_step_waits_while_the_host_loop_has_callbacks_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step due while the host's loop has other callbacks ready (a restart on its way
    through the loop's iterations, say) waits another ``STEP_GAP_MIN_S``, up to
    ``STEP_DEFER_MAX`` times in a row: bursts of ready work shorter than that see no
    step, and the sweep still goes on between them."""
    async with _sweeping(monkeypatch) as h:
        ag = h.agent

        async def bursts() -> tuple[list[int], int]:
            """Steps taken during each of 30 bursts of 2 ms of ready callbacks begun in a
            sweep; and steps taken in the idle gaps between them."""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20.0
            seen: list[int] = []
            between = 0
            while len(seen) < 30 and loop.time() < deadline:
                if ag._sweep_since is None:
                    await asyncio.sleep(0.002)
                    continue
                before = ag.sample_steps
                await _ready_work(loop, loop.time() + 0.002)
                seen.append(ag.sample_steps - before)
                before = ag.sample_steps
                await asyncio.sleep(0.003)
                between += ag.sample_steps - before
            return seen, between

        seen, between = h.run_async(bursts(), timeout=30.0)
        assert len(seen) == 30, f"only {len(seen)} bursts began in a sweep"
        # without the wait: a step every ~0.5 ms of a burst, ~4 a burst
        assert sum(seen) <= 3, seen
        assert between > 0  # the sweep went on when the loop was idle
        assert ag.sample_step_defers > 0

"""``python -m bench agent_cpu``: the host's CPU per lifecycle event the agent
delivers, on a scripted workload, by CPU clocks (issue 19).

``python -m bench agent`` times phases by the wall clock, which on a shared
machine moves with everything else that runs. This one counts: four
ping-pong pairs make a fixed number of round trips, and one of them kills a
supervised child every ``--every`` round trips (a kill is four events: exit
with its crash report, restart, spawn, link), so every run has the same
events. It reports, as medians of interleaved rounds (without the agent,
then with it and one observer reading, order alternating):

* ``host_us_per_event``: the host thread's extra CPU time
  (``time.thread_time()``) per event published, against the same round
  trips without the agent (everything the host pays: the node's event
  objects and crash reports, the collector, the host-side drains and ticks);
* ``drain_us_per_event``: the host thread's CPU inside the host-side drains
  and ticks alone, per event;
* ``writes_per_1000_events`` and ``watchdog_wakes_per_s``.

Nothing is pinned unless ``bench agent``'s ``PIN`` is set (see there why it is off).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import actors
import agent
from bench._agent_observers import TOKEN
from bench._util import emit, machine, median, progress, rnd
from bench.agent import ALL_CPUS, _cpus, _ponger, _start_reader, _unpin_agent, _worker


async def _pinger(
    proc: actors.Process, other: actors.Pid, state: dict[str, Any], sup: actors.Supervisor, rng: random.Random
) -> None:
    while True:
        proc.send(other, proc.pid)
        await proc.receive()
        state["rt"] += 1
        if state["rt"] % state["every"] == 0:
            rows = [r for r in sup.child_rows() if r.pid is not None]
            if rows:
                proc.node.exit(rng.choice(rows).pid, "boom")  # type: ignore[arg-type]
        if state["rt"] >= state["target"] and not state["done"].done():
            state["done"].set_result(None)


async def _run(node: actors.Node, sup: actors.Supervisor, round_trips: int, every: int) -> tuple[float, int]:
    """Host-thread CPU seconds for ``round_trips`` round trips, and the round trips made."""
    state: dict[str, Any] = {"rt": 0, "every": every, "target": round_trips}
    state["done"] = asyncio.get_running_loop().create_future()
    rng = random.Random(1)
    pids = []
    cpu0 = time.thread_time()
    for _ in range(4):
        pong = node.spawn(_ponger)
        pids += [pong, node.spawn(_pinger, pong, state, sup, rng)]
    await state["done"]
    cpu = time.thread_time() - cpu0
    for pid in pids:
        node.exit(pid, "kill")
    await asyncio.sleep(0.05)
    return cpu, state["rt"]


def _timed(acc: list[float], fn: Any) -> Any:
    def run(*args: Any) -> Any:
        t = time.thread_time()
        try:
            return fn(*args)
        finally:
            acc[0] += time.thread_time() - t

    return run


async def _rounds(rounds: int, round_trips: int, every: int) -> dict[str, Any]:
    pins = _cpus()
    if pins is not None:
        os.sched_setaffinity(0, pins[0])
    out: dict[str, list[float]] = {"host_us": [], "drain_us": [], "writes": [], "wakes": []}
    try:
        async with actors.Node(log_crashes=False) as node:
            sup_pid = await actors.start_supervisor(
                node, [actors.worker(f"w{i}", _worker) for i in range(20)], intensity=1_000_000, period=1.0
            )
            sup = node.process(sup_pid).behaviour
            assert isinstance(sup, actors.Supervisor)
            await _run(node, sup, round_trips // 10, every)  # warm up
            for r in range(rounds):
                base: tuple[float, int] | None = None
                if r % 2 == 0:
                    base = await _run(node, sup, round_trips, every)
                ag = agent.start(node, "127.0.0.1:0", token=TOKEN)
                _unpin_agent(ag)
                reader = await _start_reader(ag, 600, "batch")
                await asyncio.sleep(0.3)
                c = ag.collector
                acc = [0.0]
                if c.host_work is not None:
                    c.host_work = _timed(acc, c.host_work)
                if ag._host_tick_work is not None:
                    ag._host_tick_work = _timed(acc, ag._host_tick_work)
                seq0, writes0, wakes0, t0 = ag.seq, _writes(ag), ag.watchdog_wakes, time.monotonic()
                cpu, rt = await _run(node, sup, round_trips, every)
                events = ag.seq - seq0
                writes, wakes, dt = _writes(ag) - writes0, ag.watchdog_wakes - wakes0, time.monotonic() - t0
                reader.terminate()
                await reader.communicate()
                ag.stop()
                if base is None:
                    base = await _run(node, sup, round_trips, every)
                host_us = (cpu - base[0] * rt / base[1]) / max(events, 1) * 1e6
                out["host_us"].append(host_us)
                out["drain_us"].append(acc[0] / max(events, 1) * 1e6)
                out["writes"].append(writes * 1000 / max(events, 1))
                out["wakes"].append(wakes / dt)
                progress(
                    f"round {r + 1}/{rounds}: {events} events, host {host_us:.1f} us/event "
                    f"(drains and ticks {out['drain_us'][-1]:.1f}), {writes} writes, {wakes} watchdog wakes"
                )
    finally:
        if pins is not None:
            os.sched_setaffinity(0, ALL_CPUS)
    return {
        "host_us_per_event": rnd(median(out["host_us"])),
        "drain_us_per_event": rnd(median(out["drain_us"])),
        "writes_per_1000_events": rnd(median(out["writes"])),
        "watchdog_wakes_per_s": rnd(median(out["wakes"])),
        "rounds": {k: [rnd(x) for x in v] for k, v in out.items()},
    }


def _writes(ag: agent.Agent) -> int:
    return sum(s.writes for s in ag.sessions)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench agent_cpu")
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--every", type=int, default=40, help="round trips between two kills (40: a storm)")
    args = ap.parse_args(argv)
    rounds, round_trips = (2, 10_000) if args.quick else (6, 100_000)
    progress(f"agent_cpu: {rounds} rounds of {round_trips:,} round trips, a kill every {args.every}")
    res = asyncio.run(_rounds(rounds, round_trips, args.every))
    emit({**res, "targets": {}, "details": {"every": args.every, "round_trips": round_trips, "machine": machine()}})
    return 0

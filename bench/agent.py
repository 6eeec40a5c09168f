"""``python -m bench agent``: what the agent costs its host, and how fast it reports.

* ``throughput_with_agent_ratio``: message round trips/s of a busy node with
  the agent attached and one observer (a separate OS process) reading
  everything, divided by the same node's figure without the agent; phases
  alternate in the same run, the median of the per-round ratios is reported.
* ``throughput_idle_agent_ratio``: the same, with the agent started but no
  observer attached yet (measured in each round before the observer comes).
* ``crash_to_observer_p99_ms``: from a process's exit (the event's timestamp,
  taken by the runtime) to the observer process receiving it, over loopback,
  for the crashes of the measured phases (steady state: events queued behind
  the snapshot at attach time are not counted).
* ``agent_bytes_under_stalled_observer``: Python heap growth (tracemalloc,
  all threads) while an observer that never reads is attached and the node
  churns through 100,000 lifecycle events; ``agent_bytes_bound`` is the
  bound the agent enforces per session (event bytes cap + write buffer
  high-water mark + one frame of slack).

Round design (2026-12-06, issue 19): the order of the phases is reversed
every other round (without, idle, with; then with, idle, without: the idle
phase then follows the observer's leaving), each phase starts after a full
``gc.collect()`` and 0.1 s of the workload, and the observer process is kept
off the host thread's CPU (``PIN``; ``--no-pin`` to measure without). The
workload, the baseline and the lengths are unchanged.

``details.agent_costs_per_round`` tells where the agent's cost comes from in
each measured phase: batches of events and hand-offs a second, the host's
time waiting in hand-offs (ms a second) and the agent thread's CPU (Linux).
``details.event_storm`` repeats the throughput ratio (two rounds) with a kill
every millisecond instead of every 20 ms: what a crash storm costs the host.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from typing import Any

import actors
import agent
from bench._agent_observers import TOKEN, reader_main, stalled_observer
from bench._util import emit, machine, median, percentile, proc_cpu_seconds, progress, rnd


async def _pinger(proc: actors.Process, other: actors.Pid, counter: list[int]) -> None:
    while True:
        proc.send(other, proc.pid)
        await proc.receive()
        counter[0] += 1


async def _ponger(proc: actors.Process) -> None:
    while True:
        frm = await proc.receive()
        proc.send(frm, 1)


async def _worker(proc: actors.Process) -> None:
    await proc.receive()


async def _killer(proc: actors.Process, sup: actors.Pid, every: float, rng: random.Random) -> None:
    node = proc.node
    b = node.process(sup).behaviour
    assert isinstance(b, actors.Supervisor)
    while True:
        try:
            await proc.receive(timeout=every)
        except actors.ReceiveTimeout:
            pass
        rows = [r for r in b.child_rows() if r.pid is not None]
        if rows:
            node.exit(rng.choice(rows).pid, "boom")  # type: ignore[arg-type]


async def _workload(node: actors.Node, pairs: int, kill_every: float, seed: int) -> tuple[list[int], list[actors.Pid]]:
    counter = [0]
    pids = []
    for _ in range(pairs):
        pong = node.spawn(_ponger)
        pids += [pong, node.spawn(_pinger, pong, counter)]
    sup = await actors.start_supervisor(
        node, [actors.worker(f"w{i}", _worker) for i in range(20)], intensity=1_000_000, period=1.0
    )
    pids += [sup, node.spawn(_killer, sup, kill_every, random.Random(seed))]
    return counter, pids


async def _reader_ready(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if line.strip() != b"ready":
        raise RuntimeError(f"reader did not start: {line!r}")


CLOCK = "wall"
"""``--clock``: ``wall`` times the phases with the wall clock; ``cpu`` with the
host thread's CPU time plus its waits in hand-offs (the time the host gave
the agent): on a machine busy with other work the wall clock counts the time
the benchmark was not running, and the ratios swing."""


class Phase:
    """One measured phase: round trips, wall and host-thread CPU seconds,
    the host's waits in hand-offs and the events the agent published."""

    def __init__(self, rt: int, wall: float, cpu: float, wait: float, events: int) -> None:
        self.rt, self.wall, self.cpu, self.wait, self.events = rt, wall, cpu, wait, events

    @property
    def rate(self) -> float:
        """Round trips a second, by ``CLOCK``."""
        return self.rt / (self.wall if CLOCK == "wall" else max(self.cpu + self.wait, 1e-9))


async def _measure(counter: list[int], seconds: float, ag: agent.Agent | None = None) -> Phase:
    c = ag.collector if ag is not None else None
    start, seq0, wait0 = counter[0], ag.seq if ag else 0, c.handoff_wait_s if c else 0.0
    t0, cpu0 = time.perf_counter(), time.thread_time()  # the host's thread: this one
    await asyncio.sleep(seconds)
    t1, cpu1 = time.perf_counter(), time.thread_time()
    wait = (c.handoff_wait_s - wait0) if c else 0.0
    return Phase(counter[0] - start, t1 - t0, cpu1 - cpu0, wait, (ag.seq - seq0) if ag else 0)


def _host_us_per_event(without: Phase, with_: Phase) -> float | None:
    """The host's extra time per event published: its CPU and its waits in
    hand-offs in the phase with the agent, less what the same round trips
    cost it without the agent, per event (microseconds)."""
    if not with_.events or not without.rt:
        return None
    base = with_.rt * without.cpu / without.rt
    return (with_.cpu + with_.wait - base) / with_.events * 1e6


async def _phase(node: actors.Node, counter: list[int], seconds: float) -> float:
    return (await _measure(counter, seconds)).rate


def _agent_costs(ag: agent.Agent) -> tuple[float, ...]:
    c = ag.collector
    thread = ag._thread
    tid = thread.native_id if thread is not None else None
    cpu = proc_cpu_seconds(f"/proc/self/task/{tid}/stat") if tid is not None else None
    return (
        time.perf_counter(),
        c.batches,
        c.handoff_waits,
        c.handoff_wait_s,
        -1.0 if cpu is None else cpu,
        c.host_drains,
        c.host_ticks,
        ag.watchdog_wakes,
    )


PIN = True
"""``--no-pin`` turns it off. With it (Linux, two CPUs or more), the observer
process is kept off the host thread's CPU: the host thread (and the agent's
thread, while it starts) on the first CPU, the observer on the others, the
agent's thread then free to run anywhere. Unpinned, each write to the observer
wakes it, and the scheduler often wakes it on the host's CPU, where it
preempts the host (measured on the shared machine: a 40 µs send took 0.8-2 ms
of the host's wall time, 53 µs pinned): the observer's work then counts as
the agent's cost, a varying share from round to round. In production the
observer is another process, usually on another machine."""


def _cpus() -> tuple[set[int], set[int]] | None:
    """(host CPUs, observer CPUs) for pinning, or None (not pinned)."""
    if not PIN or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def _pin_observer() -> None:  # in the reader's process, before it runs
    cpus = _cpus()
    if cpus is not None:
        os.sched_setaffinity(0, cpus[1])


def _unpin_agent(ag: agent.Agent) -> None:
    """The agent's thread inherited the host thread's CPU: let it run anywhere."""
    thread = ag._thread
    if _cpus() is not None and thread is not None and thread.native_id is not None:
        try:
            os.sched_setaffinity(thread.native_id, ALL_CPUS)
        except OSError:
            pass


ALL_CPUS: set[int] = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()


async def _start_reader(ag: agent.Agent, seconds: float, features: str) -> asyncio.subprocess.Process:
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        "agent",
        "--reader",
        str(ag.port),
        str(seconds + 5),
        features,
        stdout=asyncio.subprocess.PIPE,
        preexec_fn=_pin_observer,
    )
    await _reader_ready(reader)
    return reader


async def _settled() -> None:
    """Before each measured phase: a full collection (each phase starts with
    the same heap, not with the garbage of the last one) and a short run of the
    workload, so that the phase does not begin with the collector's pause or a
    cold start (an agent just started, a reader just gone)."""
    gc.collect()
    await asyncio.sleep(0.1)


async def _throughput(
    rounds: int,
    seconds: float,
    idle: list[float] | None = None,
    costs: list[dict[str, Any]] | None = None,
    kill_every: float = 0.02,
    features: str = "batch",
    host_us: list[float] | None = None,
    host_drain: bool = True,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """``rounds`` rounds, each measuring the node without the agent, with the
    agent and nobody attached (if ``idle`` is given), and with one observer
    reading, the order reversed every other round (with, idle, without), so
    that a drift of the machine over a round does not always favour the same
    phase."""
    without: list[float] = []
    with_: list[float] = []
    ratios: list[float] = []
    latencies: list[float] = []
    pins = _cpus()
    if pins is not None:
        os.sched_setaffinity(0, pins[0])  # this thread: the host's (see PIN)
    try:
        async with actors.Node(log_crashes=False) as node:
            counter, _ = await _workload(node, pairs=4, kill_every=kill_every, seed=1)
            await _phase(node, counter, 0.3)  # warm up
            for r in range(rounds):
                forward = r % 2 == 0
                pa: Phase | None = None
                idle_rate: float | None = None
                if forward:
                    await _settled()
                    pa = await _measure(counter, seconds)
                ag = agent.start(node, "127.0.0.1:0", token=TOKEN, host_drain=host_drain)
                _unpin_agent(ag)
                if idle is not None and forward:  # the agent with nobody attached (its cost while no one watches)
                    await _settled()
                    idle_rate = (await _measure(counter, seconds)).rate
                reader = await _start_reader(ag, seconds, features)
                await asyncio.sleep(0.2)  # snapshot delivered, steady state
                await _settled()
                t_start = time.time()
                c0 = _agent_costs(ag)
                pb = await _measure(counter, seconds, ag)
                c1 = _agent_costs(ag)
                t_end = time.time()
                reader.terminate()
                out, _ = await reader.communicate()
                if not forward:
                    if idle is not None:  # the observer gone: nobody attached again
                        await _wait_detached(ag)
                        await _settled()
                        idle_rate = (await _measure(counter, seconds)).rate
                    ag.stop()
                    await _settled()
                    pa = await _measure(counter, seconds)
                else:
                    ag.stop()
                assert pa is not None
                a, b = pa.rate, pb.rate
                if idle is not None and idle_rate is not None:
                    idle.append(idle_rate / a)
                us = _host_us_per_event(pa, pb)
                if host_us is not None and us is not None:
                    host_us.append(us)
                if costs is not None:
                    dt = c1[0] - c0[0]
                    costs.append(
                        {
                            "order": "without, idle, with" if forward else "with, idle, without",
                            "batches_per_s": rnd((c1[1] - c0[1]) / dt),
                            "handoffs_per_s": rnd((c1[2] - c0[2]) / dt),
                            "handoff_wait_ms_per_s": rnd((c1[3] - c0[3]) * 1000 / dt),
                            "host_drains_per_s": rnd((c1[5] - c0[5]) / dt),
                            "host_ticks_per_s": rnd((c1[6] - c0[6]) / dt),
                            "watchdog_wakes_per_s": rnd((c1[7] - c0[7]) / dt),
                            "agent_thread_cpu_fraction": rnd((c1[4] - c0[4]) / dt) if c0[4] >= 0 else None,
                            "host_cpu_fraction": rnd(pb.cpu / pb.wall),
                            "events_per_s": rnd(pb.events / pb.wall),
                            "host_us_per_event": rnd(us) if us is not None else None,
                        }
                    )
                res = json.loads(out.decode().strip().splitlines()[-1])
                # crashes that happened during the measured phase (steady state:
                # not the ones queued behind the attach-time snapshot)
                res["crash_latencies_ms"] = [ms for t, ms in res["crash_latencies_ms"] if t_start <= t <= t_end]
                latencies += res["crash_latencies_ms"]
                without.append(a)
                with_.append(b)
                ratios.append(b / a)
                progress(
                    f"round {r + 1}/{rounds}: without {a:,.0f} rt/s, with agent {b:,.0f} rt/s, "
                    f"ratio {b / a:.3f}"
                    + (f", idle {idle[-1]:.3f}" if idle else "")
                    + f", {res['messages']} msgs read, {len(res['crash_latencies_ms'])} crashes, "
                    f"crash-to-observer p50/p99/max {_pcts(res['crash_latencies_ms'])} ms"
                )
    finally:
        if pins is not None:
            os.sched_setaffinity(0, ALL_CPUS)
    return without, with_, ratios, latencies


async def _wait_detached(ag: agent.Agent) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while ag.sessions and loop.time() < deadline:  # noqa: ASYNC110 - the agent's list of sessions signals nothing
        await asyncio.sleep(0.01)


def _pcts(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{percentile(xs, 50):.1f}/{percentile(xs, 99):.1f}/{max(xs):.1f}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench agent")
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--reader", nargs=3, metavar=("PORT", "SECONDS", "FEATURES"), help=argparse.SUPPRESS)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="how phases are timed (see CLOCK)")
    ap.add_argument("--no-pin", action="store_true", help="do not keep the observer off the host's CPU (see PIN)")
    args = ap.parse_args(argv)
    global CLOCK, PIN
    CLOCK = args.clock
    PIN = not args.no_pin
    if args.reader:
        import signal

        async def run_reader() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            await reader_main(int(args.reader[0]), float(args.reader[1]), args.reader[2])

        try:
            asyncio.run(run_reader())
        except asyncio.CancelledError:
            pass
        return 0
    pins = _cpus()
    rounds, seconds, events = (2, 0.5, 20_000) if args.quick else (9, 2.0, 100_000)
    progress(f"agent: {rounds} rounds of {seconds}s per phase")
    idle: list[float] = []
    costs: list[dict[str, Any]] = []
    host_us: list[float] = []
    without, with_, ratios, lat = asyncio.run(_throughput(rounds, seconds, idle, costs, host_us=host_us))
    storm_rounds = 2 if args.quick else 3
    progress("event storm: a kill every millisecond (~3,000 lifecycle events/s), batch frames")
    storm_costs: list[dict[str, Any]] = []
    storm_us: list[float] = []
    _, _, storm_ratios, storm_lat = asyncio.run(
        _throughput(storm_rounds, seconds, None, storm_costs, kill_every=0.001, host_us=storm_us)
    )
    progress("event storm, one event per frame (an observer that does not ask for batch frames)")
    single_costs: list[dict[str, Any]] = []
    single_us: list[float] = []
    _, _, single_ratios, single_lat = asyncio.run(
        _throughput(storm_rounds, seconds, None, single_costs, kill_every=0.001, features="none", host_us=single_us)
    )
    progress("the design replaced (host_drain=False: every batch handed to the agent's thread, the host waiting)")
    old_costs: list[dict[str, Any]] = []
    old_us: list[float] = []
    _, _, old_ratios, old_lat = asyncio.run(
        _throughput(storm_rounds, seconds, None, old_costs, host_us=old_us, host_drain=False)
    )
    old_storm_us: list[float] = []
    _, _, old_storm, old_storm_lat = asyncio.run(
        _throughput(storm_rounds, seconds, None, None, kill_every=0.001, host_us=old_storm_us, host_drain=False)
    )
    progress(f"stalled observer: {events:,} lifecycle events")
    stalled = asyncio.run(stalled_observer(events))
    bound = (3 << 20) + 256 * 1024 + (1 << 20)
    result = {
        "throughput_with_agent_ratio": rnd(median(ratios)),
        "throughput_idle_agent_ratio": rnd(median(idle)),
        "crash_to_observer_p50_ms": rnd(percentile(lat, 50)) if lat else None,
        "crash_to_observer_p99_ms": rnd(percentile(lat, 99)) if lat else None,
        "host_us_per_event": rnd(median(host_us)) if host_us else None,
        "storm_throughput_ratio": rnd(median(storm_ratios)),
        "storm_event_p99_ms": rnd(percentile(storm_lat, 99)) if storm_lat else None,
        "agent_bytes_under_stalled_observer": stalled["held_bytes"],
        "agent_bytes_bound": bound,
        "targets": {
            "throughput_with_agent_ratio>=0.97": median(ratios) >= 0.97,
            "throughput_with_agent_ratio>=0.97_every_round": min(ratios) >= 0.97,
            "throughput_idle_agent_ratio>=0.99": median(idle) >= 0.99,
            "crash_to_observer_p99_ms<=10": bool(lat) and percentile(lat, 99) <= 10,
            "storm_throughput_ratio>=0.9": median(storm_ratios) >= 0.9,
            "storm_event_p99_ms<=50": bool(storm_lat) and percentile(storm_lat, 99) <= 50,
            "agent_bytes_under_stalled_observer<=bound": stalled["held_bytes"] <= bound,
        },
        "details": {
            "roundtrips_per_s_without": [rnd(x) for x in without],
            "roundtrips_per_s_with": [rnd(x) for x in with_],
            "ratios": [rnd(x) for x in ratios],
            "idle_agent_ratios": [rnd(x) for x in idle],
            "crashes_measured": len(lat),
            "agent_costs_per_round": costs,
            "clock": CLOCK,
            "pinned": None if pins is None else {"host": sorted(pins[0]), "observer": sorted(pins[1])},
            "host_us_per_event_per_round": [rnd(x) for x in host_us],
            "event_storm": {
                "kill_every_s": 0.001,
                "ratios": [rnd(x) for x in storm_ratios],
                "crash_to_observer_p99_ms": rnd(percentile(storm_lat, 99)) if storm_lat else None,
                "host_us_per_event": rnd(median(storm_us)) if storm_us else None,
                "agent_costs_per_round": storm_costs,
            },
            "replaced_design": {
                "what": "host_drain=False: each batch handed to the agent's thread, the host waiting (GIL released)",
                "ratios": [rnd(x) for x in old_ratios],
                "crash_to_observer_p99_ms": rnd(percentile(old_lat, 99)) if old_lat else None,
                "host_us_per_event": rnd(median(old_us)) if old_us else None,
                "agent_costs_per_round": old_costs,
                "storm_ratios": [rnd(x) for x in old_storm],
                "storm_event_p99_ms": rnd(percentile(old_storm_lat, 99)) if old_storm_lat else None,
                "storm_host_us_per_event": rnd(median(old_storm_us)) if old_storm_us else None,
            },
            "event_storm_one_event_per_frame": {
                "ratios": [rnd(x) for x in single_ratios],
                "crash_to_observer_p99_ms": rnd(percentile(single_lat, 99)) if single_lat else None,
                "host_us_per_event": rnd(median(single_us)) if single_us else None,
                "agent_costs_per_round": single_costs,
            },
            "stalled": stalled,
            "bound_parts": {"event_bytes_limit": 3 << 20, "write_high_water": 256 * 1024, "frame_slack": 1 << 20},
            "machine": machine(),
        },
    }
    emit(result)
    return 0

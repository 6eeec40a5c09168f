"""``python -m bench agent``: what the agent costs its host, and how fast it reports.

* ``throughput_with_agent_ratio``: message round trips/s of a busy node with
  the agent attached and one observer (a separate OS process) reading
  everything, divided by the same node's figure without the agent, in the
  same cycle (see "Method" below); the median of the cycles' ratios is
  reported, their spread in ``details.ratio_spread``.
* ``throughput_idle_agent_ratio``: the same, with the agent started and no
  observer attached (in each cycle before the observer comes and after it
  has left); spread in ``details.idle_agent_ratio_spread``.
* ``crash_to_observer_p99_ms``: from a process's exit (the event's timestamp,
  taken by the runtime) to the observer process receiving it, over loopback,
  for the crashes of the measured phases (steady state: events queued behind
  the snapshot at attach time are not counted).
* ``agent_bytes_under_stalled_observer``: Python heap growth (tracemalloc,
  all threads) while an observer that never reads is attached and the node
  churns through 100,000 lifecycle events; ``agent_bytes_bound`` is the
  bound the agent enforces per session (event bytes cap + write buffer
  high-water mark + one frame of slack).

Method (2026-12-06, issue 19). Wall-clock throughput on a small VM drifts
by more than the effect measured (earlier runs: per-round ratios from 0.82
to 1.36, and an idle agent, which runs no code on the host, at 0.82-1.5).
So the phases are short slices (0.5 s) in cycles symmetric in time:
without the agent, the agent with nobody attached ("idle"), with one
observer reading, with again, idle again, without again (ABCCBA). Each
condition's two slices sit at the same mean time, so a drift that is
linear over a cycle (~5 s) weighs the same on both sides of a ratio and
cancels; one ratio per cycle (round trips/s summed over the condition's two
slices), many cycles (15), the median reported with the spread (min,
quartiles, max). A check of the method: the idle agent costs the node
nothing (no instrument registered, its thread asleep), so
``throughput_idle_agent_ratio`` must come out at 1.00 within the spread.
Each slice starts after a full ``gc.collect()`` and 0.1 s of the workload;
the observer is one process for the whole run, attached and detached in
each cycle (no interpreter starting up next to the host). The workload and
the baseline are unchanged.

Nothing is pinned by default (``--pin`` to keep the observer off the host
thread's CPU, see ``PIN``): on the two-vCPU machine the pinned runs came out
worse and wider (see ``PIN``), and production does not pin.

``host_us_per_event``: the host thread's extra time (CPU and waits in
hand-offs) per lifecycle event sent to the observer, against what the same
round trips cost it without the agent; taken from the storm's cycles (~3,600
events/s). In the main cycles (~200 events/s) a 1 % swing of the host's
throughput between slices is ~50 us an event, more than the cost itself, so
that figure (``details.host_us_per_event_at_low_rate``, per cycle in
``details.host_us_per_event_per_round``) is mostly noise and can come out
negative. The replaced design's storm figure is
``details.replaced_design.storm_host_us_per_event``.

``details.agent_costs_per_round`` tells where the agent's cost comes from in
each cycle's slices with the observer: batches of events and hand-offs a second, the host's
time waiting in hand-offs (ms a second) and the agent thread's CPU (Linux).
``details.event_storm`` repeats the throughput ratio (six cycles, without
the idle slices) with a kill every millisecond instead of every 20 ms: what
a crash storm costs the host (``storm_throughput_ratio``,
``storm_event_p99_ms``).
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
from bench._agent_observers import TOKEN, reader_main, reader_serve, stalled_observer
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
    """Round trips/s over ``seconds`` (warm-up)."""
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


PIN = False
"""``--pin`` turns it on (Linux, two CPUs or more): the host thread (and the
agent's thread, while it starts) on the first CPU, the observer process on
the others, the agent's thread then free to run anywhere. Why it was tried:
unpinned, each write to the observer may wake it on the host's CPU, where it
preempts the host (a 40 µs send measured at 0.8-2 ms of the host's wall time
on the loaded shared machine). Why it is off: on the quiet two-vCPU machine
pinning made every figure worse and wider (one run each, 2026-12-06:
throughput ratio 0.954 pinned against 0.974 unpinned, storm 0.72 against
0.88, the storm's host µs per event 54.9 against 32.9). A host thread held
to one CPU cannot be moved off it when something else must run there (the
agent's thread, which the scheduler wakes near its waker; the kernel's
loopback receive work and timer interrupts on that CPU), while the other
CPU, which only the observer may use, idles between its reads; unpinned,
the scheduler balances both CPUs as it does in production, where nobody
pins and the observer is usually on another machine."""


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


class Reader:
    """The observer process of one :func:`_throughput` run (``reader_serve``):
    started once, attached to each cycle's agent and detached from it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, features: str) -> Reader:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench",
            "agent",
            "--serve-reader",
            features,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=_pin_observer,
        )
        return cls(proc)

    async def _line(self) -> bytes:
        assert self.proc.stdout is not None
        return await asyncio.wait_for(self.proc.stdout.readline(), 30)

    async def attach(self, port: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"attach {port}\n".encode())
        line = await self._line()
        if line.strip() != b"ready":
            raise RuntimeError(f"reader did not attach: {line!r}")

    async def detach(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"detach\n")
        res: dict[str, Any] = json.loads(await self._line())
        return res

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _start_reader(ag: agent.Agent, seconds: float, features: str) -> asyncio.subprocess.Process:
    """A reader process attached to ``ag`` for ``seconds`` (``bench agent_cpu``)."""
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
    """Before each measured slice: a full collection (each slice starts with
    the same heap, not with the garbage of the last one) and a short run of
    the workload, so that the slice does not begin with the collector's
    pause or a cold start (an agent just started, a reader just gone)."""
    gc.collect()
    await asyncio.sleep(SETTLE)


SETTLE = 0.1


def _sum(phases: list[Phase]) -> Phase:
    return Phase(
        sum(p.rt for p in phases),
        sum(p.wall for p in phases),
        sum(p.cpu for p in phases),
        sum(p.wait for p in phases),
        sum(p.events for p in phases),
    )


class Results:
    """What :func:`_throughput` gathers, one entry per cycle."""

    def __init__(self) -> None:
        self.without: list[float] = []
        self.with_: list[float] = []
        self.ratios: list[float] = []
        self.idle: list[float] = []
        self.latencies: list[float] = []
        self.host_us: list[float] = []
        self.costs: list[dict[str, Any]] = []


async def _throughput(
    cycles: int,
    seconds: float,
    *,
    idle: bool = False,
    kill_every: float = 0.02,
    features: str = "batch",
    host_drain: bool = True,
) -> Results:
    """``cycles`` cycles of short slices, each cycle symmetric in time:
    without the agent, (the agent with nobody attached,) with one observer
    reading, with it again, (nobody attached again,) without. A drift of the
    machine that is linear over a cycle then weighs the same on each side of
    a ratio and cancels; each cycle gives one ratio (rate with over rate
    without, summed over its two slices each), and the figures are the
    median of the cycles' ratios with their spread. The agent is started
    after the first slice without it and stopped before the last; the
    observer is one process for the whole run, attached for the slices with
    it and detached after them."""
    res = Results()
    pins = _cpus()
    if pins is not None:
        os.sched_setaffinity(0, pins[0])  # this thread: the host's (see PIN)
    reader = await Reader.start(features)
    try:
        async with actors.Node(log_crashes=False) as node:
            counter, _ = await _workload(node, pairs=4, kill_every=kill_every, seed=1)
            await _phase(node, counter, 0.3)  # warm up
            for r in range(cycles):
                await _settled()
                w1 = await _measure(counter, seconds)
                ag = agent.start(node, "127.0.0.1:0", token=TOKEN, host_drain=host_drain)
                _unpin_agent(ag)
                i1 = i2 = None
                if idle:  # the agent with nobody attached (its cost while no one watches)
                    await _settled()
                    i1 = await _measure(counter, seconds)
                await reader.attach(ag.port)
                await asyncio.sleep(0.2)  # snapshot delivered, steady state
                windows = []
                withs = []
                c0 = _agent_costs(ag)
                for _ in range(2):
                    await _settled()
                    t0 = time.time()
                    withs.append(await _measure(counter, seconds, ag))
                    windows.append((t0, time.time()))
                c1 = _agent_costs(ag)
                out = await reader.detach()
                if idle:  # the observer gone: nobody attached again
                    await _wait_detached(ag)
                    await _settled()
                    i2 = await _measure(counter, seconds)
                ag.stop()
                await _settled()
                w2 = await _measure(counter, seconds)
                pa, pb = _sum([w1, w2]), _sum(withs)
                a, b = pa.rate, pb.rate
                res.without.append(a)
                res.with_.append(b)
                res.ratios.append(b / a)
                if i1 is not None and i2 is not None:
                    res.idle.append(_sum([i1, i2]).rate / a)
                us = _host_us_per_event(pa, pb)
                if us is not None:
                    res.host_us.append(us)
                res.costs.append(_costs_row(c0, c1, pb, us))
                # crashes that happened during the measured slices (steady state:
                # not the ones queued behind the attach-time snapshot)
                lat = [ms for t, ms in out["crash_latencies_ms"] if any(t0 <= t <= t1 for t0, t1 in windows)]
                res.latencies += lat
                progress(
                    f"cycle {r + 1}/{cycles}: without {a:,.0f} rt/s, with agent {b:,.0f} rt/s, "
                    f"ratio {b / a:.3f}"
                    + (f", idle {res.idle[-1]:.3f}" if idle and res.idle else "")
                    + f", {out['messages']} msgs read, {len(lat)} crashes, "
                    f"crash-to-observer p50/p99/max {_pcts(lat)} ms"
                )
    finally:
        await reader.close()
        if pins is not None:
            os.sched_setaffinity(0, ALL_CPUS)
    return res


def _costs_row(c0: tuple[float, ...], c1: tuple[float, ...], pb: Phase, us: float | None) -> dict[str, Any]:
    dt = c1[0] - c0[0]
    return {
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


def spread(xs: list[float]) -> dict[str, float] | None:
    """min, quartiles and max of the per-cycle figures (nearest rank)."""
    if not xs:
        return None
    return {
        "min": rnd(min(xs)),
        "p25": rnd(percentile(xs, 25)),
        "median": rnd(median(xs)),
        "p75": rnd(percentile(xs, 75)),
        "max": rnd(max(xs)),
    }


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
    ap.add_argument("--serve-reader", metavar="FEATURES", help=argparse.SUPPRESS)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="how slices are timed (see CLOCK)")
    pin = ap.add_mutually_exclusive_group()
    pin.add_argument("--pin", action="store_true", help="keep the observer off the host's CPU (see PIN)")
    pin.add_argument("--no-pin", action="store_true", help="the default: nothing pinned (see PIN)")
    args = ap.parse_args(argv)
    global CLOCK, PIN
    CLOCK = args.clock
    PIN = args.pin
    if args.reader or args.serve_reader is not None:
        import signal

        async def run_reader() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            if args.serve_reader is not None:
                await reader_serve(args.serve_reader)
            else:
                await reader_main(int(args.reader[0]), float(args.reader[1]), args.reader[2])

        try:
            asyncio.run(run_reader())
        except asyncio.CancelledError:
            pass
        return 0
    pins = _cpus()
    cycles, seconds, storm_cycles, events = (2, 0.25, 2, 20_000) if args.quick else (15, 0.5, 6, 100_000)
    progress(f"agent: {cycles} cycles of {seconds}s slices (without, idle, with, with, idle, without)")
    main_ = asyncio.run(_throughput(cycles, seconds, idle=True))
    progress("event storm: a kill every millisecond (~3,000 lifecycle events/s), batch frames")
    storm = asyncio.run(_throughput(storm_cycles, seconds, kill_every=0.001))
    progress("event storm, one event per frame (an observer that does not ask for batch frames)")
    single = asyncio.run(_throughput(storm_cycles, seconds, kill_every=0.001, features="none"))
    progress("the design replaced (host_drain=False: every batch handed to the agent's thread, the host waiting)")
    old = asyncio.run(_throughput(storm_cycles, seconds, host_drain=False))
    old_storm = asyncio.run(_throughput(storm_cycles, seconds, kill_every=0.001, host_drain=False))
    progress(f"stalled observer: {events:,} lifecycle events")
    stalled = asyncio.run(stalled_observer(events))
    bound = (3 << 20) + 256 * 1024 + (1 << 20)
    ratios, idle, lat = main_.ratios, main_.idle, main_.latencies

    def p99(xs: list[float]) -> float | None:
        return rnd(percentile(xs, 99)) if xs else None

    def med(xs: list[float]) -> float | None:
        return rnd(median(xs)) if xs else None

    result = {
        "throughput_with_agent_ratio": rnd(median(ratios)),
        "throughput_idle_agent_ratio": rnd(median(idle)),
        "crash_to_observer_p50_ms": rnd(percentile(lat, 50)) if lat else None,
        "crash_to_observer_p99_ms": p99(lat),
        # from the storm (~3,600 events/s): at ~200 events/s a 1 % swing of the
        # host's throughput between slices is ~50 us an event, more than the
        # cost measured, so that figure (details) is mostly noise
        "host_us_per_event": med(storm.host_us),
        "storm_throughput_ratio": rnd(median(storm.ratios)),
        "storm_event_p99_ms": p99(storm.latencies),
        "agent_bytes_under_stalled_observer": stalled["held_bytes"],
        "agent_bytes_bound": bound,
        "targets": {
            "throughput_with_agent_ratio>=0.97": median(ratios) >= 0.97,
            "throughput_with_agent_ratio>=0.97_every_round": min(ratios) >= 0.97,
            "throughput_idle_agent_ratio>=0.99": median(idle) >= 0.99,
            "crash_to_observer_p99_ms<=10": bool(lat) and percentile(lat, 99) <= 10,
            "storm_throughput_ratio>=0.9": median(storm.ratios) >= 0.9,
            "storm_event_p99_ms<=50": bool(storm.latencies) and percentile(storm.latencies, 99) <= 50,
            "agent_bytes_under_stalled_observer<=bound": stalled["held_bytes"] <= bound,
        },
        "details": {
            "method": f"{cycles} cycles of {seconds}s slices: without, idle, with, with, idle, without "
            "(storms: without, with, with, without); one ratio per cycle; medians",
            "roundtrips_per_s_without": [rnd(x) for x in main_.without],
            "roundtrips_per_s_with": [rnd(x) for x in main_.with_],
            "ratios": [rnd(x) for x in ratios],
            "ratio_spread": spread(ratios),
            "idle_agent_ratios": [rnd(x) for x in idle],
            "idle_agent_ratio_spread": spread(idle),
            "crashes_measured": len(lat),
            "agent_costs_per_round": main_.costs,
            "clock": CLOCK,
            "pinned": None if pins is None else {"host": sorted(pins[0]), "observer": sorted(pins[1])},
            "host_us_per_event_at_low_rate": med(main_.host_us),
            "host_us_per_event_per_round": [rnd(x) for x in main_.host_us],
            "event_storm": {
                "kill_every_s": 0.001,
                "ratios": [rnd(x) for x in storm.ratios],
                "ratio_spread": spread(storm.ratios),
                "crash_to_observer_p99_ms": p99(storm.latencies),
                "host_us_per_event": med(storm.host_us),
                "agent_costs_per_round": storm.costs,
            },
            "replaced_design": {
                "what": "host_drain=False: each batch handed to the agent's thread, the host waiting (GIL released)",
                "ratios": [rnd(x) for x in old.ratios],
                "crash_to_observer_p99_ms": p99(old.latencies),
                "host_us_per_event": med(old.host_us),
                "agent_costs_per_round": old.costs,
                "storm_ratios": [rnd(x) for x in old_storm.ratios],
                "storm_event_p99_ms": p99(old_storm.latencies),
                "storm_host_us_per_event": med(old_storm.host_us),
            },
            "event_storm_one_event_per_frame": {
                "ratios": [rnd(x) for x in single.ratios],
                "crash_to_observer_p99_ms": p99(single.latencies),
                "host_us_per_event": med(single.host_us),
                "agent_costs_per_round": single.costs,
            },
            "stalled": stalled,
            "bound_parts": {"event_bytes_limit": 3 << 20, "write_high_water": 256 * 1024, "frame_slack": 1 << 20},
            "machine": machine(),
        },
    }
    emit(result)
    return 0

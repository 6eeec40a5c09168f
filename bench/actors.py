"""``python -m bench actors``: the actor system against bare asyncio and Pykka.

Figures (see ``docs/benchmarks.md`` for the method of each):

* ``pingpong_vs_asyncio_queue`` / ``call_vs_asyncio_queue``: round trips/s of
  two processes ping-ponging, and of gen_server calls, over the round trips/s
  of a bare ``asyncio.Queue`` pair, measured in the same round;
* ``pingpong_vs_pykka_ask`` / ``call_vs_pykka_ask``: the same over Pykka's
  ``ThreadingActor`` ``ask``;
* ``bytes_per_idle_process`` (and the bare-asyncio peer
  ``bytes_per_idle_asyncio_task``): the larger of the tracemalloc and the RSS
  delta per idle process, 100,000 of them, each in a fresh interpreter;
* ``spawn_us`` and ``spawn_vs_create_task``; ``spawn_first_step_vs_create_task``:
  the same including each process's first step (up to its first ``receive``)
  over ``create_task`` including the bare task's first step (up to its first
  ``Queue.get``): what a new process really costs before it can take a message;
* ``restart_p50_ms`` / ``restart_p99_ms``: crash-to-running-again latency of a
  child of a one_for_one supervisor with 1,000 children;
* ``million_idle_processes_gb``: 1,000,000 idle processes, measured (RSS) or
  extrapolated;
* ``crash_reports_call_ratio``: call round trips/s on a node with crash reports
  on (the default) over a node created with ``crash_reports=False``: the median
  of back-to-back alternating blocks (reports are built only when a process
  crashes: this checks the hot path stays as fast);
* ``flight_recorder_call_ratio``: call round trips/s with the flight recorder on
  for both the client and the server over the same with it off (same method).
* ``exception_crash_reports_ratio``: a crash storm. Crash-and-restart cycles/s
  of a supervisor's child that raises (an exception with a cause, a few
  frames deep) on every message, on a node with crash reports on over one
  with ``crash_reports=False``, both with an instrument registered (the
  agent's case: reports are built only then); alternating blocks, median.
  What the node's loop pays to build a report for each crash.
* ``traced_call_ratio`` / ``untraced_call_ratio_while_tracing_others``: call
  round trips/s with caller and server in a trace session of an attached,
  reading observer, over the same untraced; and an untraced pair while another
  is traced, over nothing traced (``bench/trace.py``, ``docs/tracing.md``).

* ``uvloop``: the throughput and spawn ratios again, every one measured on
  uvloop's event loop (its own ``asyncio.Queue`` pair and ``create_task`` as
  the baselines), in the same run; ``{"skipped": ...}`` if uvloop is not
  installed.

The pykka ratios keep being reported, without a target: Pykka's ``ask`` is
~4.7x slower than the bare ``asyncio.Queue`` pair, so the old ">= 8x Pykka"
target is out of reach of any asyncio runtime and was retired (issue #16).

``--clock cpu`` times the throughput and spawn figures with this process's CPU
time instead of the wall clock: on a machine busy with other work the wall
clock counts the time the benchmark was not running, and the ratios swing.

The last line printed is one JSON object; everything before it is progress.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import pykka

from actors import (
    BRUTAL_KILL,
    From,
    GenServer,
    Instrument,
    Node,
    Pid,
    Process,
    Reply,
    Restarted,
    start_server,
    start_supervisor,
    stop_server,
    worker,
)

from ._util import (
    emit,
    machine,
    median,
    mem_available_bytes,
    percentile,
    progress,
    rnd,
    rss_bytes,
    run_bench_json,
)
from .trace import trace_ratios

perf = time.perf_counter
clock = time.perf_counter
"""The clock of the throughput and spawn figures: wall time by default;
``--clock cpu`` makes it the process's CPU time (all threads: Pykka's actor
thread included), which holds still on a machine busy with other work."""

TARGETS: dict[str, tuple[str, float]] = {
    "pingpong_vs_asyncio_queue": (">=", 1.1),
    "call_vs_asyncio_queue": (">=", 0.8),
    "spawn_first_step_vs_create_task": ("<=", 1.1),
    "bytes_per_idle_process": ("<=", 2616.0),
    "restart_p99_ms": ("<=", 1.0),
    "crash_reports_call_ratio": (">=", 0.97),
    "flight_recorder_call_ratio": (">=", 0.8),
    "traced_call_ratio": (">=", 0.5),
    "untraced_call_ratio_while_tracing_others": (">=", 0.97),
}
"""Key -> (comparison, target). 2616 bytes is a fresh BEAM process (OTP 26, 64-bit)."""


@dataclass(frozen=True)
class Config:
    rounds: int
    queue_rt: int
    pingpong_rt: int
    call_rt: int
    pykka_rt: int
    mem_n: int
    spawn_n: int
    spawn_rounds: int
    siblings: int
    restarts: int
    instrumented_restarts: int
    million: bool
    pairs: int = 10
    """Alternating on/off blocks for the crash-report and flight-recorder ratios."""
    pair_rt: int = 1_000
    """Call round trips per block."""
    crash_blocks: int = 6
    """Alternating on/off blocks for the exception crash-storm ratio..."""
    crashes_per_block: int = 300
    """... of this many crash-and-restart cycles each."""


FULL = Config(
    rounds=5,
    queue_rt=40_000,
    pingpong_rt=40_000,
    call_rt=20_000,
    pykka_rt=4_000,
    mem_n=100_000,
    spawn_n=100_000,
    spawn_rounds=3,
    siblings=1_000,
    restarts=1_000,
    instrumented_restarts=300,
    million=True,
    pairs=20,
    pair_rt=5_000,
)
QUICK = Config(
    rounds=2,
    queue_rt=2_000,
    pingpong_rt=2_000,
    call_rt=1_000,
    pykka_rt=300,
    mem_n=10_000,
    spawn_n=10_000,
    spawn_rounds=1,
    siblings=100,
    restarts=50,
    instrumented_restarts=20,
    million=False,
    crash_blocks=2,
    crashes_per_block=50,
)


# -- process bodies and peers -----------------------------------------------------------------


async def _idle(proc: Process) -> None:
    """An idle process: blocked in receive."""
    await proc.receive()


async def _bare_idle() -> None:
    """The bare-asyncio peer of an idle process: a task blocked on its own queue."""
    q: asyncio.Queue[Any] = asyncio.Queue()
    await q.get()


class _Echo(GenServer):
    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply:
        return Reply(request, state)


class _PykkaEcho(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


# -- throughput -------------------------------------------------------------------------------


async def queue_pair(n: int) -> float:
    """Round trips/s of two tasks over two ``asyncio.Queue`` (one each way)."""
    there: asyncio.Queue[int] = asyncio.Queue()
    back: asyncio.Queue[int] = asyncio.Queue()

    async def echo() -> None:
        get, put = there.get, back.put_nowait
        for _ in range(n):
            put(await get())

    task = asyncio.get_running_loop().create_task(echo())
    await asyncio.sleep(0)
    put, get = there.put_nowait, back.get
    t0 = clock()
    for i in range(n):
        put(i)
        await get()
    dt = clock() - t0
    await task
    return n / dt


async def actor_pingpong(node: Node, n: int) -> float:
    """Round trips/s of two processes: ``proc.send`` + ``await proc.receive()``."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def pong(proc: Process) -> None:
        peer = await proc.receive()
        send, receive = proc.send, proc.receive
        while True:
            send(peer, await receive())

    async def ping(proc: Process, peer: Pid) -> None:
        send, receive = proc.send, proc.receive
        send(peer, proc.pid)
        t0 = clock()
        for i in range(n):
            send(peer, i)
            await receive()
        done.set_result(n / (clock() - t0))

    pong_pid = node.spawn(pong)
    node.spawn(ping, pong_pid)
    try:
        return await done
    finally:
        node.exit(pong_pid, "kill")


async def actor_call(node: Node, server: Pid, n: int, *, timeout: float | None = 5.0, recorder: bool = False) -> float:
    """Round trips/s of ``await node.call(server, i)`` from a client process
    (``timeout`` as given; 5.0 s is ``call``'s default). ``recorder``: with the
    flight recorder on for the client and the server."""
    done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def client(proc: Process) -> None:
        call = node.call
        t0 = clock()
        if timeout == 5.0:
            for i in range(n):
                await call(server, i)
        else:
            for i in range(n):
                await call(server, i, timeout=timeout)
        done.set_result(n / (clock() - t0))

    pid = node.spawn(client)
    if recorder:
        node.flight_recorder(pid, True)
        node.flight_recorder(server, True)
    try:
        return await done
    finally:
        if recorder:
            node.flight_recorder(server, False)


def pykka_ask(ref: Any, n: int) -> float:
    """Round trips/s of ``actor_ref.ask(i)`` (blocking, from this thread)."""
    ask = ref.ask
    t0 = clock()
    for i in range(n):
        ask(i)
    return n / (clock() - t0)


async def paired_ratio(a: Any, b: Any, pairs: int) -> tuple[float, list[float]]:
    """Median of ``a()/b()`` over ``pairs`` back-to-back blocks, alternating which
    runs first: load from the rest of the machine drifts slowly, so adjacent
    blocks see about the same and their ratio cancels most of it."""
    ratios = []
    for i in range(pairs):
        gc.collect()
        if i % 2:
            rb = await b()
            ra = await a()
        else:
            ra = await a()
            rb = await b()
        ratios.append(ra / rb)
    return median(ratios), ratios


async def throughput(cfg: Config) -> dict[str, Any]:
    """Interleaved rounds of every throughput figure; ratios per round, then medians."""
    rows: list[dict[str, float]] = []
    ref = _PykkaEcho.start()
    try:
        async with Node(log_crashes=False) as node, Node(log_crashes=False, crash_reports=False) as node_off:
            server = await start_server(node, _Echo)
            server_off = await start_server(node_off, _Echo)
            assert server is not None and server_off is not None
            # warm-up (imports, code paths, allocator)
            await queue_pair(cfg.queue_rt // 10)
            await actor_pingpong(node, cfg.pingpong_rt // 10)
            await actor_call(node, server, cfg.call_rt // 10)
            await actor_call(node_off, server_off, cfg.call_rt // 10)
            await actor_call(node, server, cfg.call_rt // 10, recorder=True)
            pykka_ask(ref, cfg.pykka_rt // 10)
            for r in range(cfg.rounds):
                row: dict[str, float] = {}
                steps: list[tuple[str, Any]] = [
                    ("queue", lambda: queue_pair(cfg.queue_rt)),
                    ("pingpong", lambda: actor_pingpong(node, cfg.pingpong_rt)),
                    ("call", lambda: actor_call(node, server, cfg.call_rt)),
                    ("call_no_timeout", lambda: actor_call(node, server, cfg.call_rt, timeout=None)),
                    ("call_reports_off", lambda: actor_call(node_off, server_off, cfg.call_rt)),
                    ("call_recorder", lambda: actor_call(node, server, cfg.call_rt, recorder=True)),
                    ("pykka", None),
                ]
                # rotate the order each round so no figure always runs first
                k = r % len(steps)
                for key, fn in steps[k:] + steps[:k]:
                    gc.collect()
                    row[key] = pykka_ask(ref, cfg.pykka_rt) if fn is None else await fn()
                rows.append(row)
                progress(
                    f"round {r + 1}/{cfg.rounds}: queue {row['queue']:,.0f}/s  pingpong {row['pingpong']:,.0f}/s  "
                    f"call {row['call']:,.0f}/s  call(timeout=None) {row['call_no_timeout']:,.0f}/s  "
                    f"pykka ask {row['pykka']:,.0f}/s  call(reports off) {row['call_reports_off']:,.0f}/s  "
                    f"call(flight recorder) {row['call_recorder']:,.0f}/s"
                )
            progress(f"crash reports and flight recorder: {cfg.pairs} alternating blocks of {cfg.pair_rt:,} calls")
            reports_ratio, reports_blocks = await paired_ratio(
                lambda: actor_call(node, server, cfg.pair_rt),
                lambda: actor_call(node_off, server_off, cfg.pair_rt),
                cfg.pairs,
            )
            recorder_ratio, recorder_blocks = await paired_ratio(
                lambda: actor_call(node, server, cfg.pair_rt, recorder=True),
                lambda: actor_call(node, server, cfg.pair_rt),
                cfg.pairs,
            )
            await stop_server(node, server)
            await stop_server(node_off, server_off)
    finally:
        ref.stop()

    def med(fn: Any) -> float:
        return median([fn(row) for row in rows])

    return {
        "pingpong_vs_asyncio_queue": med(lambda x: x["pingpong"] / x["queue"]),
        "call_vs_asyncio_queue": med(lambda x: x["call"] / x["queue"]),
        "pingpong_vs_pykka_ask": med(lambda x: x["pingpong"] / x["pykka"]),
        "call_vs_pykka_ask": med(lambda x: x["call"] / x["pykka"]),
        "crash_reports_call_ratio": reports_ratio,
        "flight_recorder_call_ratio": recorder_ratio,
        "details": {
            "rounds": cfg.rounds,
            "round_trips_per_round": {
                "asyncio_queue": cfg.queue_rt,
                "pingpong": cfg.pingpong_rt,
                "call": cfg.call_rt,
                "pykka_ask": cfg.pykka_rt,
            },
            "asyncio_queue_rt_per_s": rnd(med(lambda x: x["queue"])),
            "pingpong_rt_per_s": rnd(med(lambda x: x["pingpong"])),
            "call_rt_per_s": rnd(med(lambda x: x["call"])),
            "call_timeout_none_rt_per_s": rnd(med(lambda x: x["call_no_timeout"])),
            "call_timeout_none_vs_asyncio_queue": rnd(med(lambda x: x["call_no_timeout"] / x["queue"])),
            "pykka_ask_rt_per_s": rnd(med(lambda x: x["pykka"])),
            "call_reports_off_rt_per_s": rnd(med(lambda x: x["call_reports_off"])),
            "call_reports_off_vs_asyncio_queue": rnd(med(lambda x: x["call_reports_off"] / x["queue"])),
            "call_flight_recorder_rt_per_s": rnd(med(lambda x: x["call_recorder"])),
            "crash_reports_ratio_per_block": [rnd(x, 4) for x in reports_blocks],
            "flight_recorder_ratio_per_block": [rnd(x, 4) for x in recorder_blocks],
            "crash_reports_ratio_of_round_medians": rnd(med(lambda x: x["call"] / x["call_reports_off"]), 4),
            "per_round": [{k: rnd(v) for k, v in row.items()} for row in rows],
        },
    }


# -- memory (each probe in a fresh interpreter) ---------------------------------------------


async def _memory_probe(kind: str, n: int, mode: str) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    node = Node(log_crashes=False)
    keep: list[asyncio.Task[None]] = []
    await asyncio.sleep(0)
    gc.collect()
    if mode == "tracemalloc":
        tracemalloc.start()
    rss0 = rss_bytes()
    tm0 = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else 0
    t0 = perf()
    first = last = None
    if kind == "actors":
        spawn = node.spawn
        first = spawn(_idle)
        for _ in range(n - 2):
            spawn(_idle)
        last = spawn(_idle)
    else:
        create_task = loop.create_task
        for _ in range(n):
            keep.append(create_task(_bare_idle()))
    t_spawn = perf() - t0
    await asyncio.sleep(0)  # every one runs its first step and blocks
    t_started = perf() - t0
    if kind == "actors":
        assert first is not None and last is not None
        assert node.process_count() == n
        assert node.info(first).status == "waiting" and node.info(last).status == "waiting"
    else:
        assert not any(t.done() for t in keep)
    gc.collect()
    rss1 = rss_bytes()
    tm1 = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else 0
    return {
        "kind": kind,
        "n": n,
        "mode": mode,
        "bytes_per": (tm1 - tm0) / n if mode == "tracemalloc" else (rss1 - rss0) / n,
        "rss_delta": rss1 - rss0,
        "rss_total": rss1,
        "spawn_s": t_spawn,
        "spawn_and_start_s": t_started,
    }


def memory_probe_main(spec: str) -> int:
    """Entry of a probe subprocess: ``KIND:N:MODE``; prints one JSON line and
    leaves at once (tearing down a million tasks would take longer than the probe)."""
    kind, n, mode = spec.split(":")
    if kind not in ("actors", "asyncio") or mode not in ("rss", "tracemalloc"):
        raise SystemExit(f"bad probe {spec!r}")
    loop = asyncio.new_event_loop()
    out = loop.run_until_complete(_memory_probe(kind, int(n), mode))
    emit(out)
    sys.stdout.flush()
    os._exit(0)


def memory(cfg: Config, timeout: float) -> dict[str, Any]:
    """Per-idle-process memory of actors and of the bare-asyncio peer."""
    res: dict[str, dict[str, Any]] = {}
    for kind in ("actors", "asyncio"):
        for mode in ("rss", "tracemalloc"):
            r = run_bench_json(["actors", "--memory-probe", f"{kind}:{cfg.mem_n}:{mode}"], timeout)
            res[f"{kind}_{mode}"] = r
            progress(f"memory {kind} ({mode}): {r['bytes_per']:,.0f} bytes each over {cfg.mem_n:,}")
    a_rss, a_tm = res["actors_rss"]["bytes_per"], res["actors_tracemalloc"]["bytes_per"]
    q_rss, q_tm = res["asyncio_rss"]["bytes_per"], res["asyncio_tracemalloc"]["bytes_per"]
    return {
        "bytes_per_idle_process": max(a_rss, a_tm),
        "bytes_per_idle_asyncio_task": max(q_rss, q_tm),
        "details": {
            "n": cfg.mem_n,
            "actors_rss_bytes_per": rnd(a_rss, 4),
            "actors_tracemalloc_bytes_per": rnd(a_tm, 4),
            "asyncio_task_rss_bytes_per": rnd(q_rss, 4),
            "asyncio_task_tracemalloc_bytes_per": rnd(q_tm, 4),
            "actors_spawn_and_start_s": rnd(res["actors_rss"]["spawn_and_start_s"]),
        },
    }


def million(cfg: Config, per_process: float, per_spawn_s: float, timeout: float) -> dict[str, Any]:
    """1,000,000 idle processes: measured by RSS when it fits, else extrapolated."""
    n = 1_000_000
    estimate = per_process * n
    avail = mem_available_bytes() or 0
    est_time = per_spawn_s * n
    fits = estimate * 1.3 < min(3e9, avail / 2) and est_time < 90
    if cfg.million and fits:
        progress(f"spawning {n:,} idle processes for real (about {estimate / 1e9:.2f} GB, {est_time:.0f} s)")
        r = run_bench_json(["actors", "--memory-probe", f"actors:{n}:rss"], timeout)
        return {
            "million_idle_processes_gb": r["rss_delta"] / 1e9,
            "details": {
                "method": "measured: RSS delta of 1,000,000 idle processes in a fresh interpreter (GB = 1e9 bytes)",
                "bytes_per": rnd(r["bytes_per"], 4),
                "rss_total_gb": rnd(r["rss_total"] / 1e9),
                "spawn_s": rnd(r["spawn_s"]),
                "spawn_and_start_s": rnd(r["spawn_and_start_s"]),
            },
        }
    why = (
        "quick run"
        if not cfg.million
        else f"would not fit comfortably (estimate {estimate / 1e9:.2f} GB, {est_time:.0f} s)"
    )
    return {
        "million_idle_processes_gb": estimate / 1e9,
        "details": {
            "method": (
                f"extrapolated: 1,000,000 x bytes_per_idle_process measured over {cfg.mem_n:,} ({why}); GB = 1e9 bytes"
            ),
        },
    }


# -- spawn ---------------------------------------------------------------------------------------


async def _spawn_actors(n: int) -> tuple[float, float]:
    """``n`` x ``node.spawn(_idle)`` on a fresh node: (seconds for the calls,
    seconds until every process ran its first step)."""
    node = Node(log_crashes=False)
    await node.__aenter__()
    spawn = node.spawn
    t0 = clock()
    for _ in range(n):
        spawn(_idle)
    t1 = clock()
    await asyncio.sleep(0)
    t2 = clock()
    await node.shutdown()
    return t1 - t0, t2 - t0


async def _spawn_asyncio(n: int) -> tuple[float, float]:
    """The bare peer: ``n`` x ``loop.create_task(_bare_idle())``, the tasks kept in a list."""
    keep: list[asyncio.Task[None]] = []
    create_task = asyncio.get_running_loop().create_task
    append = keep.append
    t0 = clock()
    for _ in range(n):
        append(create_task(_bare_idle()))
    t1 = clock()
    await asyncio.sleep(0)
    t2 = clock()
    for t in keep:
        t.cancel()
    await asyncio.wait(keep)
    return t1 - t0, t2 - t0


async def spawn_cost(cfg: Config) -> dict[str, Any]:
    """Mean ``node.spawn`` time vs ``loop.create_task`` of the bare peer, interleaved rounds.

    Each side runs in a coroutine of its own, so that nothing it made outlives
    it into the other side's timing: every object still alive is traversed by
    each full collection of the cyclic GC, which the spawns trigger. (The bare
    side's tasks were once kept alive by a bound ``keep.append`` left in this
    function's frame, 1.6 million objects through the next actors round.)
    """
    n = cfg.spawn_n
    rows: list[dict[str, float]] = []
    for r in range(cfg.spawn_rounds):
        row: dict[str, float] = {}
        order = ("actors", "asyncio") if r % 2 == 0 else ("asyncio", "actors")
        for kind in order:
            gc.collect()
            calls, started = await (_spawn_actors(n) if kind == "actors" else _spawn_asyncio(n))
            row[kind] = calls / n * 1e6
            row[kind + "_started"] = started / n * 1e6
        rows.append(row)
        progress(
            f"spawn round {r + 1}/{cfg.spawn_rounds}: node.spawn {row['actors']:.2f} us, "
            f"create_task {row['asyncio']:.2f} us (with first step: {row['actors_started']:.2f} / "
            f"{row['asyncio_started']:.2f} us)"
        )
    return {
        "spawn_us": median([x["actors"] for x in rows]),
        "spawn_vs_create_task": median([x["actors"] / x["asyncio"] for x in rows]),
        "spawn_first_step_vs_create_task": median([x["actors_started"] / x["asyncio_started"] for x in rows]),
        "details": {
            "n": n,
            "rounds": cfg.spawn_rounds,
            "create_task_us": rnd(median([x["asyncio"] for x in rows])),
            "spawn_with_first_step_us": rnd(median([x["actors_started"] for x in rows])),
            "create_task_with_first_step_us": rnd(median([x["asyncio_started"] for x in rows])),
        },
    }


# -- restart latency ---------------------------------------------------------------------------


class _Probe:
    """Children report their first step here; the benchmark waits on ``waiting``."""

    def __init__(self) -> None:
        self.pids: dict[int, Pid] = {}
        self.waiting: asyncio.Future[float] | None = None

    def started(self, idx: int, pid: Pid) -> None:
        t = perf()
        self.pids[idx] = pid
        w = self.waiting
        if w is not None:
            self.waiting = None
            if not w.done():
                w.set_result(t)


async def _restartable(proc: Process, probe: _Probe, idx: int) -> None:
    probe.started(idx, proc.pid)
    while True:
        await proc.receive()


class _RestartClock(Instrument):
    def __init__(self) -> None:
        self.at: dict[Pid, float] = {}

    def restarted(self, event: Restarted) -> None:
        if event.new_pid is not None:
            self.at[event.new_pid] = perf()


async def restart_latency(siblings: int, restarts: int, *, instrument: bool, seed: int = 1) -> dict[str, Any]:
    """Kill a random child of a one_for_one supervisor ``restarts`` times;
    latency = ``node.exit(pid, "boom")`` to the new child's first step."""
    rng = random.Random(seed)
    probe = _Probe()
    clock = _RestartClock()
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    event_lat: list[float] = []
    async with Node(log_crashes=False) as node:
        specs = [worker(i, _restartable, probe, i, shutdown=BRUTAL_KILL) for i in range(siblings)]
        sup = await start_supervisor(node, specs, strategy="one_for_one", intensity=10**9, period=1.0)
        assert len(probe.pids) == siblings
        if instrument:
            node.add_instrument(clock)
        gc.collect()
        for _ in range(restarts):
            idx = rng.randrange(siblings)
            old = probe.pids[idx]
            fut: asyncio.Future[float] = loop.create_future()
            probe.waiting = fut
            t0 = perf()
            node.exit(old, "boom")
            t1 = await asyncio.wait_for(fut, 5.0)
            new = probe.pids[idx]
            assert new != old
            lat.append(t1 - t0)
            if instrument:
                event_lat.append(clock.at.pop(new) - t0)
        if instrument:
            node.remove_instrument(clock)
        node.exit(sup, "shutdown")
    out: dict[str, Any] = {
        "p50_ms": percentile(lat, 50) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": max(lat) * 1e3,
        "mean_ms": sum(lat) / len(lat) * 1e3,
    }
    if instrument:
        out["restarted_event_p50_ms"] = percentile(event_lat, 50) * 1e3
        out["restarted_event_p99_ms"] = percentile(event_lat, 99) * 1e3
    return out


def _fail_deep(msg: Any, depth: int) -> None:
    if depth:
        _fail_deep(msg, depth - 1)
        return
    try:
        raise KeyError(msg)
    except KeyError as exc:
        raise ValueError(f"cannot handle {msg!r}") from exc


async def _crashing(proc: Process, probe: _Probe, idx: int) -> None:
    probe.started(idx, proc.pid)
    while True:
        _fail_deep(await proc.receive(), 4)


class _LastExit(Instrument):
    """Stands for an agent's collector: takes each event, reads nothing on the loop."""

    def __init__(self) -> None:
        self.last: Any = None

    def exited(self, event: Any) -> None:
        self.last = event


async def _crash_block(node: Node, probe: _Probe, n: int) -> float:
    """``n`` crash-and-restart cycles of child 0; returns cycles per second."""
    loop = asyncio.get_running_loop()
    t0 = perf()
    for _ in range(n):
        fut: asyncio.Future[float] = loop.create_future()
        probe.waiting = fut
        node.send(probe.pids[0], "boom")
        await asyncio.wait_for(fut, 5.0)
    return n / (perf() - t0)


async def crash_storm(cfg: Config) -> dict[str, Any]:
    ratios: list[float] = []
    on_rates: list[float] = []
    off_rates: list[float] = []
    async with Node(log_crashes=False) as on, Node(log_crashes=False, crash_reports=False) as off:
        probes = {}
        for node in (on, off):
            probe = _Probe()
            await start_supervisor(node, [worker(0, _crashing, probe, 0)], intensity=10**9, period=1.0)
            node.add_instrument(_LastExit())
            probes[id(node)] = probe
            await _crash_block(node, probe, 20)  # warm up
        for i in range(cfg.crash_blocks):
            order = (on, off) if i % 2 == 0 else (off, on)
            rates = {id(node): await _crash_block(node, probes[id(node)], cfg.crashes_per_block) for node in order}
            on_rates.append(rates[id(on)])
            off_rates.append(rates[id(off)])
            ratios.append(rates[id(on)] / rates[id(off)])
    return {
        "exception_crash_reports_ratio": median(ratios),
        "details": {
            "blocks": cfg.crash_blocks,
            "crashes_per_block": cfg.crashes_per_block,
            "cycles_per_s_reports_on": [rnd(x) for x in on_rates],
            "cycles_per_s_reports_off": [rnd(x) for x in off_rates],
            "ratio_per_block": [rnd(x, 4) for x in ratios],
        },
    }


async def restarts(cfg: Config) -> dict[str, Any]:
    main = await restart_latency(cfg.siblings, cfg.restarts, instrument=False)
    progress(
        f"restart with {cfg.siblings:,} siblings: p50 {main['p50_ms']:.3f} ms, p99 {main['p99_ms']:.3f} ms, "
        f"max {main['max_ms']:.3f} ms over {cfg.restarts:,}"
    )
    inst = await restart_latency(cfg.siblings, cfg.instrumented_restarts, instrument=True, seed=2)
    progress(
        f"restart with an Instrument: first step p99 {inst['p99_ms']:.3f} ms, "
        f"restarted event p99 {inst['restarted_event_p99_ms']:.3f} ms"
    )
    few = await restart_latency(10, cfg.instrumented_restarts, instrument=False, seed=3)
    progress(f"restart with 10 siblings: p50 {few['p50_ms']:.3f} ms, p99 {few['p99_ms']:.3f} ms")
    return {
        "restart_p50_ms": main["p50_ms"],
        "restart_p99_ms": main["p99_ms"],
        "details": {
            "siblings": cfg.siblings,
            "restarts": cfg.restarts,
            "max_ms": rnd(main["max_ms"]),
            "mean_ms": rnd(main["mean_ms"]),
            "with_instrument": {
                "restarts": cfg.instrumented_restarts,
                "first_step_p50_ms": rnd(inst["p50_ms"]),
                "first_step_p99_ms": rnd(inst["p99_ms"]),
                "restarted_event_p50_ms": rnd(inst["restarted_event_p50_ms"]),
                "restarted_event_p99_ms": rnd(inst["restarted_event_p99_ms"]),
            },
            "ten_siblings": {
                "restarts": cfg.instrumented_restarts,
                "p50_ms": rnd(few["p50_ms"]),
                "p99_ms": rnd(few["p99_ms"]),
            },
        },
    }


# -- main ------------------------------------------------------------------------------------------


_LOOP_RATIOS = (
    "pingpong_vs_asyncio_queue",
    "call_vs_asyncio_queue",
    "pingpong_vs_pykka_ask",
    "call_vs_pykka_ask",
    "crash_reports_call_ratio",
    "flight_recorder_call_ratio",
)
"""The throughput ratios, measured again on uvloop."""


def on_uvloop(cfg: Config) -> dict[str, Any]:
    """The throughput and spawn ratios measured on uvloop's loop, or why not."""
    try:
        import uvloop  # optional: a dev dependency
    except ImportError:
        return {"skipped": "uvloop is not installed"}
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        tp = runner.run(throughput(cfg))
        sp = runner.run(spawn_cost(cfg))
    result: dict[str, Any] = {k: tp[k] for k in _LOOP_RATIOS}
    for k in ("spawn_vs_create_task", "spawn_first_step_vs_create_task"):
        result[k] = sp[k]
    result = {k: rnd(v, 4) for k, v in result.items()}
    result["targets"] = _targets(result)
    result["details"] = {
        "uvloop": getattr(uvloop, "__version__", "?"),
        "throughput": tp["details"],
        "spawn": sp["details"],
    }
    return result


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (op, target) in TARGETS.items():
        if key not in result:
            continue
        value = result[key]
        met = value >= target if op == ">=" else value <= target
        out[key] = {"target": f"{op} {target:g}", "value": rnd(value), "met": met}
    return out


def run(cfg: Config, quick: bool) -> dict[str, Any]:
    started = perf()
    details: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": machine(),
        "clock": "cpu (process_time)" if clock is time.process_time else "wall (perf_counter)",
    }
    result: dict[str, Any] = {}

    progress(f"memory: {cfg.mem_n:,} idle processes vs {cfg.mem_n:,} bare tasks, each in a fresh interpreter")
    mem = memory(cfg, timeout=600)
    result["bytes_per_idle_process"] = mem["bytes_per_idle_process"]
    result["bytes_per_idle_asyncio_task"] = mem["bytes_per_idle_asyncio_task"]
    details["memory"] = mem["details"]

    progress(f"throughput: {cfg.rounds} interleaved rounds")
    tp = asyncio.run(throughput(cfg))
    for k in (
        "pingpong_vs_asyncio_queue",
        "call_vs_asyncio_queue",
        "pingpong_vs_pykka_ask",
        "call_vs_pykka_ask",
        "crash_reports_call_ratio",
        "flight_recorder_call_ratio",
    ):
        result[k] = tp[k]
    details["throughput"] = tp["details"]

    progress(f"spawn: {cfg.spawn_n:,} per round")
    sp = asyncio.run(spawn_cost(cfg))
    result["spawn_us"] = sp["spawn_us"]
    result["spawn_vs_create_task"] = sp["spawn_vs_create_task"]
    result["spawn_first_step_vs_create_task"] = sp["spawn_first_step_vs_create_task"]
    details["spawn"] = sp["details"]

    progress(f"restart: one_for_one supervisor with {cfg.siblings:,} children")
    rs = asyncio.run(restarts(cfg))
    result["restart_p50_ms"] = rs["restart_p50_ms"]
    result["restart_p99_ms"] = rs["restart_p99_ms"]
    details["restart"] = rs["details"]

    progress(f"crash storm: {cfg.crash_blocks} blocks of {cfg.crashes_per_block} exception crashes, reports on/off")
    cs = asyncio.run(crash_storm(cfg))
    result["exception_crash_reports_ratio"] = cs["exception_crash_reports_ratio"]
    details["crash_storm"] = cs["details"]

    progress(f"tracing: {cfg.pairs} pairs of blocks of {cfg.pair_rt:,} calls traced / untraced, an observer attached")
    tr = trace_ratios(calls=cfg.pair_rt, pairs=cfg.pairs, clock=clock)
    for k in ("traced_call_ratio", "untraced_call_ratio_while_tracing_others"):
        result[k] = tr.pop(k)
    details["trace"] = tr

    progress("a million idle processes")
    per_spawn_s = details["memory"]["actors_spawn_and_start_s"] / cfg.mem_n
    mi = million(cfg, result["bytes_per_idle_process"], per_spawn_s, timeout=600)
    result["million_idle_processes_gb"] = mi["million_idle_processes_gb"]
    details["million"] = mi["details"]

    progress("uvloop: the throughput and spawn ratios again, on uvloop's event loop")
    uv = on_uvloop(cfg)

    result = {k: rnd(v, 4) for k, v in result.items()}
    details["elapsed_s"] = rnd(perf() - started)
    result["uvloop"] = uv
    result["targets"] = _targets(result)
    result["details"] = details
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench actors", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run (seconds; figures are rough)")
    parser.add_argument("--memory-probe", metavar="KIND:N:MODE", help=argparse.SUPPRESS)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="clock of the throughput and spawn ratios: wall time (default) or this process's CPU time, "
        "steadier on a busy machine",
    )
    args = parser.parse_args(argv)
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.memory_probe:
        return memory_probe_main(args.memory_probe)
    emit(run(QUICK if args.quick else FULL, args.quick))
    return 0

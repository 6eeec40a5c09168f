"""The sustained-chaos workload of ``python -m bench chaos``: ``python -m bench._sustained``.

A node of ``BENCH_GROUPS`` (default 1,000) one_for_one supervisors of
``BENCH_PER`` (default 10) children each under one root: 10,000 killable
processes, half plain workers waiting on their mailbox, half gen_servers
holding a small state. Unlike the demo's (3-14 restarts per 10-30 s, sized
for a shop), every supervisor's budget here is sized for the attack:
``BENCH_INTENSITY`` restarts (default 20) per ``BENCH_PERIOD`` seconds
(default 5). At 1,000 kills/s spread at random over 1,000 supervisors, each
spends one restart a second on average, five per period: the budget is four
times that, so a within-budget experiment skips a kill only when chance
piles up a dozen more on one supervisor (about once in a million draws), and
nothing ever gives up. The root's budget is never touched (no supervisor is
killed).

Garbage collection
    The start-up heap is frozen (``gc.freeze``), and the node collects its young
    generations on a timer (``BENCH_GC_YOUNG_MS``, default every 20 ms; the
    middle one every tenth time; 0: CPython's own policy). A node replacing a
    thousand processes a second frees the old processes' objects as fast as it
    makes the new ones, and CPython starts a young collection on its count of
    allocations *minus* deallocations: that count stayed under the threshold (700)
    while the young generation grew to 50,000-65,000 objects, whose collection
    then held the node's loop 20-50 ms (CPU time, several times in 8 s at 1,000
    kills/s; measured with ``gc.callbacks``). Collected every 20 ms, a young
    generation holds ~20 restarts' objects (its longest collection took 1.7 ms;
    one collection of the middle generation a run still took ~25 ms).
    The full collection's threshold is raised (a thousand collections of the
    middle generation) so that the timer's collections, which each count towards
    it, do not bring on full ones during a run; the benchmark's runs are short,
    and little of what a kill leaves is cyclic.

Starts the agent on 127.0.0.1 (a free port) with ``OBSERVER_AGENT_TOKEN``
and prints one line ``agent 127.0.0.1:PORT processes=N``; runs until stdin
closes (the benchmark went away) or SIGTERM/SIGINT, then prints one line
``gc {"pauses": [[start, generation, wall_ms, cpu_ms], ...]}``: the node's
collections since it printed its address that took at least ``PAUSE_MIN_MS``
(:class:`GcPauses`; ``start`` is wall-clock time, ``cpu_ms`` its thread's CPU
time).

Threading rules
    The node's loop runs in the main thread; a daemon thread watches stdin and
    sets the stop event through ``call_soon_threadsafe``; the agent runs in its
    own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

import actors
import agent
from agent.client import AgentClient

__all__ = [
    "GC_YOUNG_MS",
    "GROUPS",
    "INTENSITY",
    "PER",
    "PERIOD",
    "Counter",
    "GcPauses",
    "build",
    "collect_young",
    "main",
    "sampling_figures",
]

GROUPS = 1000
PER = 10
INTENSITY = 20
PERIOD = 5.0
GC_YOUNG_MS = 20.0
"""The node collects its young generations this often (see the module docstring)."""
PAUSE_MIN_MS = 2.0
"""Collections reported (:class:`GcPauses`) took at least this long (wall clock) ..."""
PAUSE_LIMIT = 2000
"""... the first this many of them."""
LABELS = ("Fetcher", "Parser", "Indexer", "Cache", "Mailer")


async def _worker(proc: actors.Process) -> None:
    while True:
        await proc.receive()


class Counter(actors.GenServer):
    """A gen_server holding a count (``bump`` adds one, ``get`` replies with it)."""

    async def init(self, *args: Any) -> int:
        return 0

    async def handle_call(self, request: Any, from_: actors.From, state: int) -> actors.Reply:
        return actors.Reply(state, state)

    async def handle_cast(self, request: Any, state: int) -> int:
        return state + 1


def _child(i: int) -> actors.ChildSpec:
    label = LABELS[i % len(LABELS)]
    if i % 2:
        return Counter.child_spec(id=f"s{i}", label=f"{label}Server")
    return actors.worker(f"w{i}", _worker, label=label)


async def build(
    node: actors.Node, *, groups: int = GROUPS, per: int = PER, intensity: int = INTENSITY, period: float = PERIOD
) -> actors.Pid:
    """Start the tree on ``node``; returns the root supervisor's pid."""
    specs = [
        actors.supervisor_spec(
            f"g{g}",
            [_child(i) for i in range(per)],
            strategy="one_for_one",
            intensity=intensity,
            period=period,
            label="Shard",
        )
        for g in range(groups)
    ]
    return await actors.start_supervisor(
        node, specs, strategy="one_for_one", intensity=10, period=1.0, name="sustained_root", label="Root"
    )


class GcPauses:
    """Collections of the garbage collector that took at least ``PAUSE_MIN_MS`` (a
    ``gc.callbacks`` hook): ``[start wall time, generation, wall ms, CPU ms]`` each, the
    first ``PAUSE_LIMIT``."""

    def __init__(self) -> None:
        self.pauses: list[list[float]] = []
        self._t = 0.0
        self._c = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t, self._c = time.time(), time.thread_time()
            return
        wall = (time.time() - self._t) * 1000.0
        if wall >= PAUSE_MIN_MS and len(self.pauses) < PAUSE_LIMIT:
            cpu = (time.thread_time() - self._c) * 1000.0
            self.pauses.append([self._t, int(info["generation"]), round(wall, 3), round(cpu, 3)])


async def collect_young(every_ms: float) -> None:
    """Collect the young generation every ``every_ms`` and the middle one every tenth time
    (see the module docstring); runs until cancelled."""
    gc.set_threshold(gc.get_threshold()[0], gc.get_threshold()[1], 1000)
    n = 0
    while True:
        await asyncio.sleep(every_ms / 1000.0)
        n += 1
        gc.collect(1 if n % 10 == 0 else 0)


async def run(
    token: str,
    *,
    groups: int,
    per: int,
    intensity: int,
    period: float,
    freeze: bool = True,
    young_ms: float = GC_YOUNG_MS,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    def watch() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.read(4096):
                pass
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="sustained-stdin", daemon=True).start()
    async with actors.Node(log_crashes=False) as node:
        await build(node, groups=groups, per=per, intensity=intensity, period=period)
        ag = agent.start(node, "127.0.0.1:0", token=token)
        if freeze:
            gc.collect()
            gc.freeze()  # the start-up heap is long-lived: full collections no longer walk it
        young = loop.create_task(collect_young(young_ms)) if young_ms > 0 else None
        pauses = GcPauses()
        gc.callbacks.append(pauses)
        try:
            print(f"agent 127.0.0.1:{ag.port} processes={len(node.processes())}", flush=True)
            await stop.wait()
        finally:
            gc.callbacks.remove(pauses)
            if young is not None:
                young.cancel()
            ag.stop()
            with contextlib.suppress(OSError):  # (the benchmark may have gone)
                print("gc " + json.dumps({"pauses": pauses.pauses}), flush=True)
    return 0


async def sampling_figures(*, groups: int = GROUPS, seconds: float = 5.0) -> dict[str, Any]:
    """The agent's sampler on the workload's tree, idle, in this process: how long a whole
    sweep takes (``sweep_ms``: what a scan done in one go held the host's loop for) and the
    longest step the sweeps after the first are done in (``longest_step_ms``, CPU time: what
    it holds it for now; ``first_sweep_longest_step_ms``: the first sweep after attaching,
    whose last step hands every process's first row to the session), with an observer
    attached for ``seconds``."""
    token = "sampling-figures-" + "x" * 16
    async with actors.Node(log_crashes=False) as node:
        await build(node, groups=groups)
        ag = agent.start(node, "127.0.0.1:0", token=token)
        try:
            gc.collect()
            gc.freeze()
            client = await AgentClient.connect("127.0.0.1", ag.port, token=token, role="operator")
            try:
                await client.read_snapshot(60.0)
                costs: list[float] = []
                first_longest = 0.0
                loop = asyncio.get_running_loop()
                end = loop.time() + seconds
                while (left := end - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        m = await client.next_message(left)
                        if m.get("t") == "samples" and m.get("node"):
                            costs.append(float(m["node"]["sample_cost_ms"]))
                            if len(costs) == 1:
                                first_longest, ag.sample_step_max_s = ag.sample_step_max_s, 0.0
            finally:
                await client.close()
            steps, longest = ag.sample_steps, ag.sample_step_max_s
        finally:
            ag.stop()
            gc.unfreeze()
    later = sorted(costs[1:])  # the first sweep meets every process for the first time
    return {
        "processes": groups * (PER + 1) + 1,
        "sweeps": len(costs),
        "first_sweep_ms": costs[0] if costs else None,
        "sweep_ms": later[len(later) // 2] if later else None,
        "longest_step_ms": round(longest * 1000, 3) if len(costs) > 1 else None,
        "first_sweep_longest_step_ms": round(first_longest * 1000, 3),
        "steps": steps,
    }


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="sustained: %(levelname)s %(name)s: %(message)s")
    token = os.environ.get("OBSERVER_AGENT_TOKEN") or ""
    if not token:
        print("bench._sustained: OBSERVER_AGENT_TOKEN is not set", file=sys.stderr)
        return 2
    env = os.environ.get
    return asyncio.run(
        run(
            token,
            groups=int(env("BENCH_GROUPS") or GROUPS),
            per=int(env("BENCH_PER") or PER),
            intensity=int(env("BENCH_INTENSITY") or INTENSITY),
            period=float(env("BENCH_PERIOD") or PERIOD),
            freeze=env("BENCH_GC_FREEZE", "1") not in ("0", "no", "false"),
            young_ms=float(env("BENCH_GC_YOUNG_MS") or GC_YOUNG_MS),
        )
    )


if __name__ == "__main__":
    sys.exit(main())

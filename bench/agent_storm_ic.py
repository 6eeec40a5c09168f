"""``python -m bench agent_storm_ic``: instructions per storm event, by callgrind.

What a crash storm costs the observed process, counted instead of timed (a
count is the same on a loaded machine and a quiet one). A node runs a
supervisor of 20 workers with the agent attached and one observer reading
(a separate OS process, not counted); a script kills a supervised child
``--kills`` times (each kill: an ``exit`` with its crash report, a
``restart``, a ``spawn``, a ``link``), paced by loop iterations, not by the
clock. The script runs four times under ``valgrind --tool=callgrind``: with
the agent and without it, each with ``--kills`` kills and with none. The
agent's extra instructions for the kills (with less without, each less its
run with no kill: the interpreter's start-up and the set-up cancel out),
divided by the events the agent published, are ``instructions_per_event``
(the agent's periodic tick is left out, see ``HEARTBEAT``; the run with the
agent and no kill waits as long as the one with kills took):
everything the process pays for an event while observed (the runtime's
event objects and crash reports, the collector, the drains, encoding, the
writes' system call entry), the runtime's own kill-and-restart work left
out. Run with ``PYTHONHASHSEED=0`` (the script sets it). Timers (the
hand-offs' 2-5 ms delays) still decide how events share a
batch, so counts move by a few percent from run to run.

Needs ``valgrind`` (``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import actors
import agent
from bench._agent_observers import TOKEN
from bench._util import ROOT, emit, machine, progress, rnd

HEARTBEAT = 3600.0
"""The agent's tick, out of the count: its work (sampling sweeps, fresh-spawn
re-checks) is paid by the second, not by the event, and a run under
callgrind lasts 5-20 s by the machine's load: with 10 ticks a second the
counts moved by 10 % from run to run."""


async def _worker(proc: actors.Process) -> None:
    await proc.receive()


async def _child(kills: int, with_agent: bool, idle: float) -> tuple[int, float]:
    async with actors.Node(log_crashes=False) as node:
        sup_pid = await actors.start_supervisor(
            node, [actors.worker(f"w{i}", _worker) for i in range(20)], intensity=1_000_000, period=1.0
        )
        sup = node.process(sup_pid).behaviour
        assert isinstance(sup, actors.Supervisor)
        if not with_agent:
            await _kills(node, sup, kills)
            await asyncio.sleep(0.2)
            return 0, 0.0
        ag = agent.start(node, "127.0.0.1:0", token=TOKEN, heartbeat=HEARTBEAT)
        try:
            reader = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench", "agent", "--reader", str(ag.port), "600", "batch",
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert reader.stdout is not None
            line = await asyncio.wait_for(reader.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"reader did not start: {line!r}")
            await _quiet(ag)
            seq0 = ag.seq
            t0 = time.monotonic()
            if kills:
                await _kills(node, sup, kills)
            else:
                await asyncio.sleep(max(0.0, idle - 0.21))  # as long as the run with kills: as many ticks
            await _quiet(ag)
            seconds = time.monotonic() - t0
            events = ag.seq - seq0
            reader.terminate()
            await reader.communicate()
        finally:
            ag.stop()
    return events, seconds


async def _kills(node: actors.Node, sup: actors.Supervisor, kills: int) -> None:
    rng = random.Random(1)
    for i in range(kills):
        rows = [r for r in sup.child_rows() if r.pid is not None]
        node.exit(rng.choice(rows).pid, "boom")  # type: ignore[arg-type]
        for _ in range(6):  # the exit signal, the supervisor's restart
            await asyncio.sleep(0)
        if i % 4 == 3:  # and now and then a hand-off
            await asyncio.sleep(0.003)


async def _quiet(ag: agent.Agent) -> None:
    """Until the agent has published everything queued (and a little more)."""
    for _ in range(400):
        await asyncio.sleep(0.01)
        if not ag.collector.buf and not ag.collector.wake_pending:
            break
    await asyncio.sleep(0.2)


def _run(kills: int, with_agent: bool, idle: float = 0.0) -> tuple[int, int, float]:
    """(instructions, events, seconds of the measured part) of one child run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench",
                "agent_storm_ic",
                "--child",
                str(kills),
                *(() if with_agent else ("--no-agent",)),
                "--idle",
                str(idle),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            check=True,
        )
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:
            raise RuntimeError(f"no callgrind total in:\n{proc.stderr[-2000:]}")
        ev = re.search(r"^events (\d+) seconds (\S+)$", proc.stdout, re.M)
        if ev is None:
            raise RuntimeError(f"the child printed no event count:\n{proc.stdout[-2000:]}")
        return int(m.group(1)), int(ev.group(1)), float(ev.group(2))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench agent_storm_ic")
    ap.add_argument("--kills", type=int, default=300, help="kills in the measured run")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--no-agent", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--idle", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        events, seconds = asyncio.run(_child(args.child, not args.no_agent, args.idle))
        print(f"events {events} seconds {seconds:.3f}", flush=True)
        return 0
    progress(f"agent_storm_ic: callgrind, {args.kills} kills and none")
    # once outside callgrind first: every module compiled and cached (a run
    # that compiled what the others read from the cache would count it)
    subprocess.run(
        [sys.executable, "-m", "bench", "agent_storm_ic", "--child", "4"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    runs: dict[tuple[bool, int], tuple[int, int, float]] = {}
    for with_agent in (False, True):
        for kills in (args.kills, 0):
            idle = runs[True, args.kills][2] if with_agent and not kills else 0.0
            runs[with_agent, kills] = _run(kills, with_agent, idle)
            progress(f"agent {with_agent}, {kills} kills: {runs[with_agent, kills][0]:,} instructions")
    events = runs[True, args.kills][1]
    workload = runs[False, args.kills][0] - runs[False, 0][0]
    extra = runs[True, args.kills][0] - runs[True, 0][0] - workload
    res: dict[str, Any] = {
        "instructions_per_event": rnd(extra / max(events, 1)),
        "targets": {},
        "details": {
            "kills": args.kills,
            "events": events,
            "workload_instructions_per_kill": rnd(workload / args.kills),
            "runs": {f"{'agent' if a else 'none'}_{k}": n for (a, k), (n, _, _) in runs.items()},
            "seconds_under_callgrind": rnd(runs[True, args.kills][2]),
            "machine": machine(),
        },
    }
    emit(res)
    return 0

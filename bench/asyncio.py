"""``python -m bench asyncio``: what the agent costs a plain asyncio program, and how fast it reports.

* ``http_rps_with_agent_ratio``: requests/s of a real aiohttp app (its own
  process) with the agent attached and an observer (another process)
  reading everything, over the same app without the agent; the load comes
  from this process (aiohttp client, ``--concurrency`` connections). Both
  servers run through the whole benchmark; each round measures both, in
  alternating order; the median of the per-round ratios is reported.
* ``task_churn_with_agent_ratio``: a loop doing steady work (a small
  computation, then a yield, in a loop) while it creates and finishes
  ``--churn-rate`` (10,000) short tasks a second: its work done per second
  with the agent and this process attached as its observer, over the same
  without the agent. ``details.max_churn_rounds``: the most short tasks a
  second such a loop creates and finishes (100 at a time, gathered), both ways.
* ``task_crash_to_observer_p99_ms``: from a task's end (the exit event's
  timestamp, taken in the task's done callback) to this process receiving
  the event with its crash report, over loopback, one crash every 10 ms.
* ``tasks_100k_snapshot_s``: a loop with ``--pending`` (100,000) tasks
  waiting: the time for a fresh observer to connect, authenticate and hold
  the whole snapshot.

Figures on a shared 2-core machine are noisy; read ``details`` for the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.client import AgentClient
from bench._util import ROOT, emit, machine, median, percentile, progress, rnd, stop_process

TOKEN = "bench-token-0123456789abcdef"
TARGETS = {
    "http_rps_with_agent_ratio": (">=", 0.95),
    "task_churn_with_agent_ratio": (">=", 0.90),
    "task_crash_to_observer_p99_ms": ("<=", 10.0),
    "tasks_100k_snapshot_s": ("<=", 1.0),
}


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, (op, target) in TARGETS.items():
        value = result[key]
        met = value >= target if op == ">=" else value <= target
        out[key] = {"target": f"{op} {target:g}", "value": value, "met": met}
    return out


def _spawn(mode: str, tmp: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    ready = tmp / f"{mode}-{time.monotonic_ns()}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench._aio_host", mode, "--ready-file", str(ready), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    return proc, ready


async def _ready(proc: subprocess.Popen[str], path: Path, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(path.exists):
        if proc.poll() is not None:
            raise RuntimeError(f"bench host {proc.args!r} ended early (rc={proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench host {proc.args!r} not ready in {timeout} s")
        await asyncio.sleep(0.02)
    info: dict[str, Any] = json.loads(await asyncio.to_thread(path.read_text))
    return info


async def _load(port: int, seconds: float, concurrency: int) -> float:
    import aiohttp  # optional dependency of this benchmark

    url = f"http://127.0.0.1:{port}/"
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def one_worker(end: float) -> None:
            nonlocal done
            while time.perf_counter() < end:
                async with http.get(url) as r:
                    await r.read()
                done += 1

        await asyncio.gather(*(one_worker(time.perf_counter() + 0.2) for _ in range(concurrency)))  # warm up
        done = 0
        t0 = time.perf_counter()
        await asyncio.gather(*(one_worker(t0 + seconds) for _ in range(concurrency)))
        return done / (time.perf_counter() - t0)


async def http_ratio(tmp: Path, rounds: int, seconds: float, concurrency: int) -> tuple[float, list[dict[str, Any]]]:
    plain, pr = _spawn("serve", tmp, "--agent", "0")
    with_agent, ar = _spawn("serve", tmp, "--agent", "1")
    observer = None
    try:
        p_info, a_info = await _ready(plain, pr), await _ready(with_agent, ar)
        observer, orr = _spawn("observe", tmp, "--port", str(a_info["agent_port"]))
        await _ready(observer, orr)
        per_round = []
        for i in range(rounds):
            order = [("plain", p_info), ("agent", a_info)]
            if i % 2:
                order.reverse()
            rps = {name: await _load(info["http_port"], seconds, concurrency) for name, info in order}
            per_round.append({"plain_rps": rnd(rps["plain"]), "agent_rps": rnd(rps["agent"])})
            progress(f"http round {i + 1}: {rps['plain']:.0f} req/s plain, {rps['agent']:.0f} with the agent")
        return median([r["agent_rps"] / r["plain_rps"] for r in per_round]), per_round
    finally:
        for p in (observer, plain, with_agent):
            if p is not None:
                stop_process(p)


async def _churn_once(tmp: Path, on: bool, seconds: float, rate: float) -> dict[str, float]:
    proc, ready = _spawn("churn", tmp, "--agent", "1" if on else "0", "--seconds", str(seconds), "--rate", str(rate))
    client = drain = None
    try:
        info = await _ready(proc, ready)
        if on:
            client = await AgentClient.connect("127.0.0.1", info["agent_port"], token=TOKEN)
            drain = asyncio.create_task(_drain(client))
        out, _ = await asyncio.to_thread(proc.communicate, timeout=seconds * 10 + 60)
        res: dict[str, float] = json.loads(out.strip().splitlines()[-1])
        return res
    finally:
        if drain is not None:
            drain.cancel()
        if client is not None:
            await client.close()
        stop_process(proc)


async def _drain(client: AgentClient) -> None:
    while True:
        try:
            await client.next_message(1.0)
        except TimeoutError:
            continue


async def churn_ratio(
    tmp: Path, rounds: int, seconds: float, rate: float
) -> tuple[float, list[dict[str, Any]], list[dict[str, Any]]]:
    steady, most = [], []
    for i in range(rounds):
        order = [False, True] if i % 2 == 0 else [True, False]
        res = {on: await _churn_once(tmp, on, seconds, rate) for on in order}
        steady.append(
            {
                "plain_work_per_s": rnd(res[False]["work_per_s"]),
                "agent_work_per_s": rnd(res[True]["work_per_s"]),
                "plain_tasks_per_s": rnd(res[False]["tasks_per_s"]),
                "agent_tasks_per_s": rnd(res[True]["tasks_per_s"]),
            }
        )
        progress(
            f"churn round {i + 1} at {rate:.0f} tasks/s: work {res[False]['work_per_s']:.0f}/s plain, "
            f"{res[True]['work_per_s']:.0f}/s with the agent"
        )
        top = {on: await _churn_once(tmp, on, seconds, 0) for on in order}
        most.append(
            {"plain_tasks_per_s": rnd(top[False]["tasks_per_s"]), "agent_tasks_per_s": rnd(top[True]["tasks_per_s"])}
        )
        progress(
            f"max churn round {i + 1}: {most[-1]['plain_tasks_per_s']} tasks/s plain, "
            f"{most[-1]['agent_tasks_per_s']} with the agent"
        )
    ratio = median([r["agent_work_per_s"] / r["plain_work_per_s"] for r in steady])
    return ratio, steady, most


async def crash_latency(tmp: Path, count: int) -> tuple[float, dict[str, Any]]:
    proc, ready = _spawn("crash", tmp, "--count", str(count), "--every-ms", "10")
    try:
        info = await _ready(proc, ready)
        client = await AgentClient.connect("127.0.0.1", info["agent_port"], token=TOKEN)
        lat: list[float] = []
        try:
            await client.read_snapshot()
            deadline = time.monotonic() + count * 0.01 + 30
            while len(lat) < count and time.monotonic() < deadline:
                try:
                    m = await client.next_message(1.0)
                except TimeoutError:
                    continue
                if m.get("t") == "ev" and m.get("ev") == "exit" and m.get("report"):
                    lat.append((time.time() - float(m["time"])) * 1000)
        finally:
            await client.close()
        return percentile(lat, 99), {"crashes_seen": len(lat), "p50_ms": rnd(percentile(lat, 50))}
    finally:
        stop_process(proc)


async def snapshot_time(tmp: Path, count: int) -> tuple[float, dict[str, Any]]:
    proc, ready = _spawn("pending", tmp, "--count", str(count))
    try:
        info = await _ready(proc, ready, timeout=120)
        t0 = time.perf_counter()
        client = await AgentClient.connect("127.0.0.1", info["agent_port"], token=TOKEN)
        try:
            snap = await client.read_snapshot(timeout=120)
        finally:
            await client.close()
        took = time.perf_counter() - t0
        tasks = sum(1 for p in snap["procs"] if p["kind"] == "task")
        if tasks < count:
            raise RuntimeError(f"the snapshot held {tasks} of {count} tasks")
        return took, {"tasks_in_snapshot": tasks, "records": len(snap["procs"])}
    finally:
        stop_process(proc)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-asyncio-") as d:
        tmp = Path(d)
        progress("http: aiohttp with and without the agent")
        http, http_rounds = await http_ratio(tmp, args.rounds, args.seconds, args.concurrency)
        progress("task churn")
        churn, churn_rounds, max_churn = await churn_ratio(tmp, args.rounds, args.seconds, args.churn_rate)
        progress("crash latency")
        p99, crash_details = await crash_latency(tmp, args.crashes)
        progress(f"snapshot of {args.pending} pending tasks")
        snap_s, snap_details = await snapshot_time(tmp, args.pending)
    result: dict[str, Any] = {
        "http_rps_with_agent_ratio": rnd(http),
        "task_churn_with_agent_ratio": rnd(churn),
        "task_crash_to_observer_p99_ms": rnd(p99),
        "tasks_100k_snapshot_s": rnd(snap_s),
    }
    return result | {
        "targets": _targets(result),
        "details": {
            "http_rounds": http_rounds,
            "churn_rounds": churn_rounds,
            "max_churn_rounds": max_churn,
            "crash": crash_details,
            "snapshot": {"pending_tasks": args.pending, **snap_details},
            "settings": {"rounds": args.rounds, "seconds": args.seconds, "concurrency": args.concurrency},
            "machine": machine(),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench asyncio", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (smoke test): figures are rough")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--crashes", type=int, default=500)
    p.add_argument("--churn-rate", type=float, default=10_000.0)
    p.add_argument("--pending", type=int, default=100_000)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.crashes, args.pending = 1, 0.5, 50, 20_000
    emit(asyncio.run(run(args)))
    return 0

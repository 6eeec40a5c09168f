"""``python -m bench chaos``: recovery times of the demo system under 10, 100 and 1,000 kills/s.

For each rate a fresh demo system (``python -m observer.demo``: the demo tree
with its traffic and its agent, in its own OS process) is attacked for a few
seconds by a within-budget experiment (``observer.chaos``, ``budget_margin``
1 for the crashes the demo's own traffic causes), killing a random worker or
gen_server every ``1/rate`` seconds through the agent. Figures per rate, in
the journal's format:

* ``recovery_p50_ms``/``recovery_p99_ms``: from the ``kill`` command being
  sent to the supervisor's ``restart`` event for the killed pid (its
  timestamp, taken by the runtime), over the kills carried out;
* ``attempted``/``carried_out``/``skipped_budget``: within budget, kills that
  would take a supervisor past its restart intensity are skipped -- at 100 and
  1,000 kills/s the demo's budgets (3-14 restarts per 10-30 s) allow only the
  first few dozen, so the percentiles there cover those kills, made at that rate;
* ``within_budget_kills`` (carried out, all rates) and
  ``within_budget_give_ups`` (supervisors that gave up: must be 0).

Then the same three rates against the sustained workload (:mod:`bench._sustained`:
10,000 processes under 1,000 supervisors whose budgets allow 1,000 kills/s),
20, 20 and 10 s, a fresh node per rate; the ``sustained`` object holds
``recovery_p50_ms``/``recovery_p99_ms``/``recovery_max_ms`` by rate,
``sustained_kills`` (carried out, all rates), ``sustained_give_ups``,
``skipped_other`` (anything skipped but for the budget: ``late`` when the
engine fell behind), ``ack_p99_ms`` (the kill command's round trip),
``node_gc`` (the node's garbage collections during each run: how many took
over 5 ms, the longest, and the share of the slowest 1 % of kills that
overlapped one of at least 2 ms), CPU per kill of this process (the observer side) and of the node, and its targets.
``--sustained-only`` leaves the demo runs out; ``--quick`` is 1 s per rate;
``--gc-young-ms 0`` leaves the node's garbage collection to CPython (by
default it collects its young generations every 20 ms: see
:mod:`bench._sustained`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import selectors
import subprocess
import sys
import time
from typing import Any

from bench import _sustained
from bench._util import ROOT, emit, machine, proc_cpu_seconds, progress, rnd, stop_process
from observer.chaos.experiment import Experiment, Probe, kill_spec
from observer.chaos.journal import percentiles
from observer.chaos.runner import attached, run

RATES = (10, 100, 1000)
SUSTAINED_SECONDS = {10: 20.0, 100: 20.0, 1000: 10.0}
"""Seconds of killing per rate on the sustained workload: 12,200 kills in all."""


def _start_node(module: str, token: str, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m module`` (a node with its agent) and read its ``agent HOST:PORT`` line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_AGENT_")}
    env.update(OBSERVER_AGENT_TOKEN=token, **extra_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT
    )
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + 60
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            if time.monotonic() > deadline or not sel.select(max(0.0, deadline - time.monotonic())):
                proc.kill()
                raise RuntimeError(f"{module} did not start")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"{module} exited ({proc.wait()})")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    return proc, line.split()[1]


def _experiment(title: str, rate: int, seconds: float, seed: int, recovery_ms: float, settle_s: float) -> Experiment:
    return Experiment(
        title=title,
        probes=(
            Probe("recovery_ms", recovery_ms, "killed children back in time"),
            Probe("supervisors_gave_up", 0, "nobody gave up"),
            Probe("children_restored", True, "every child back"),
        ),
        method=(
            kill_spec(
                {
                    "interval_ms": 1000.0 / rate,
                    "duration_s": seconds,
                    "mode": "within_budget",
                    "budget_margin": 1,
                    "seed": seed,
                }
            ),
        ),
        settle_s=settle_s,
        abort_on_deviation=False,
    )


def _row(rate: int, seconds: float, j: dict[str, Any]) -> dict[str, Any]:
    s = j["summary"]
    skipped = s["skipped"]
    return {
        "rate": rate,
        "seconds": seconds,
        "attempted": s["attempted"],
        "carried_out": s["carried_out"],
        "recovered": s["recovered"],
        "skipped_budget": skipped["would_exceed_budget"],
        "skipped_other": sum(skipped.values()) - skipped["would_exceed_budget"],
        "skipped": {k: v for k, v in skipped.items() if v},
        "errors": s["errors"],
        "not_restarted": s["not_restarted"],
        "give_ups": s["give_ups"],
        "recovery_ms": s["recovery_ms"],
        "hypothesis_held": j["hypothesis_held"],
        "status": j["status"],
        "deviations": [d["message"] for d in j["deviations"]][:5],
    }


def measure(rate: int, seconds: float, seed: int, scale: int, *, recovery_ms: float = 5000.0) -> dict[str, Any]:
    """The demo system under ``rate`` kills/s (its own budgets: most attempts are skipped)."""
    token = secrets.token_urlsafe(24)
    demo_env = {"OBSERVER_DEMO_SEED": str(seed), "OBSERVER_DEMO_SCALE": str(scale)}
    proc, address = _start_node("observer.demo", token, demo_env)
    try:
        with attached(address, token) as (mgr, att):
            time.sleep(0.5)  # let the demo's traffic start
            settle = 5.0 if recovery_ms < 5000 else 10.0
            exp = _experiment(f"demo under {rate} kills/s", rate, seconds, seed, recovery_ms, settle)
            _, j = run(mgr, att, exp)
    finally:
        stop_process(proc)
    row = _row(rate, seconds, j)
    row["peak_budget_use"] = {
        (b.get("name") or pid): f"{b['peak_used']}/{b['intensity']}" for pid, b in j["budgets"].items()
    }
    return row


def measure_sustained(
    rate: int,
    seconds: float,
    seed: int,
    *,
    groups: int = _sustained.GROUPS,
    recovery_ms: float = 5000.0,
    gc_young_ms: float = _sustained.GC_YOUNG_MS,
) -> dict[str, Any]:
    """The sustained workload (:mod:`bench._sustained`, budgets sized for the rate) under ``rate`` kills/s."""
    token = secrets.token_urlsafe(24)
    node_env = {"BENCH_GROUPS": str(groups), "BENCH_GC_YOUNG_MS": repr(gc_young_ms)}
    proc, address = _start_node("bench._sustained", token, node_env)
    try:
        with attached(address, token, timeout=60.0) as (mgr, att):
            exp = _experiment(f"sustained workload under {rate} kills/s", rate, seconds, seed, recovery_ms, 10.0)
            cpu0 = (proc_cpu_seconds("/proc/self/stat"), proc_cpu_seconds(f"/proc/{proc.pid}/stat"))
            _, j = run(mgr, att, exp)
            cpu1 = (proc_cpu_seconds("/proc/self/stat"), proc_cpu_seconds(f"/proc/{proc.pid}/stat"))
    finally:
        pauses = _stop_node(proc)
    row = _row(rate, seconds, j)
    row["ack_ms"] = percentiles([k["ack_ms"] for k in j["kills"] if k.get("ack_ms") is not None])
    row["node_gc"] = _gc_figures(pauses, j)
    made = max(1, row["carried_out"])
    for key, a, b in (("observer", cpu0[0], cpu1[0]), ("node", cpu0[1], cpu1[1])):
        # CPU for the whole experiment (checks and settling included) per kill carried out
        row[f"{key}_cpu_ms_per_kill"] = rnd((b - a) * 1000.0 / made) if a is not None and b is not None else None
    peak = max((b["peak_used"] for b in j["budgets"].values()), default=0)
    row["supervisors_touched"] = len(j["budgets"])
    row["peak_budget_use"] = f"{peak}/{_sustained.INTENSITY} per {_sustained.PERIOD:g} s"
    return row


def _stop_node(proc: subprocess.Popen[bytes]) -> list[list[float]]:
    """Stop the sustained node (SIGTERM) and read its last line: its garbage collections'
    pauses (``[start, generation, wall ms, CPU ms]``; empty if it did not say)."""
    out = b""
    try:
        if proc.poll() is None:
            proc.terminate()
        try:
            out = proc.communicate(timeout=10.0)[0] or b""
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate(timeout=5.0)[0] or b""
    finally:
        stop_process(proc)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("gc "):
            try:
                return list(json.loads(line[3:])["pauses"])
            except (ValueError, KeyError, TypeError):
                return []
    return []


def _gc_figures(pauses: list[list[float]], j: dict[str, Any]) -> dict[str, Any]:
    """The node's collections during the experiment (from its start to its end, settling
    included): how many took over 5 ms, the longest (wall and CPU ms), and the share of the
    slowest 1 % of kills whose recovery overlapped a collection of at least 2 ms."""
    start, end = j.get("started") or 0.0, j.get("ended") or 0.0
    during = [p for p in pauses if start <= p[0] <= end]
    spans = [(p[0], p[0] + p[2] / 1000.0) for p in during]
    kills = sorted((k for k in j["kills"] if k.get("recovery_ms") is not None), key=lambda k: float(k["recovery_ms"]))
    slowest = kills[-max(1, len(kills) // 100) :] if kills else []

    def overlaps(k: dict[str, Any]) -> bool:
        a = float(k["time"])
        b = a + float(k["recovery_ms"]) / 1000.0
        return any(s < b and e > a for s, e in spans)

    return {
        "collections_over_5ms": sum(1 for p in during if p[2] > 5.0),
        "longest_ms": max((p[2] for p in during), default=0.0),
        "longest_cpu_ms": max((p[3] for p in during), default=0.0),
        "slowest_1pct_during_gc": rnd(sum(1 for k in slowest if overlaps(k)) / len(slowest)) if slowest else None,
    }


def _say(what: str, row: dict[str, Any]) -> None:
    r = row["recovery_ms"]
    progress(
        f"  {what}: attempted {row['attempted']}, carried out {row['carried_out']}, skipped {row['skipped'] or 0}, "
        f"errors {row['errors']}, recovery p50 {r['p50']} ms p99 {r['p99']} ms max {r['max']} ms, "
        f"give-ups {row['give_ups']}"
        + (f", kill acknowledged p50 {a['p50']} ms p99 {a['p99']} ms" if (a := row.get("ack_ms")) else "")
    )


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 s per rate (a smoke test)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds of killing per rate, demo (default 4)")
    ap.add_argument(
        "--sustained-seconds",
        type=float,
        default=None,
        help=f"seconds of killing per rate, sustained workload (default {SUSTAINED_SECONDS})",
    )
    ap.add_argument("--sustained-only", action="store_true", help="only the sustained workload (no demo runs)")
    ap.add_argument(
        "--groups",
        type=int,
        default=_sustained.GROUPS,
        help=f"supervisors of the sustained workload, {_sustained.PER} children each (default {_sustained.GROUPS})",
    )
    ap.add_argument(
        "--gc-young-ms",
        type=float,
        default=_sustained.GC_YOUNG_MS,
        help="the sustained node collects its young generations this often "
        f"(default {_sustained.GC_YOUNG_MS:g}; 0: CPython's own policy, see bench/_sustained.py)",
    )
    ap.add_argument("--rates", default=None, help="sustained rates to run, comma-separated (default 10,100,1000)")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 4.0)
    recovery_ms = 2000.0 if args.quick else 5000.0
    rows: dict[str, dict[str, Any]] = {}
    if not args.sustained_only:
        for rate in RATES:
            progress(f"demo under {rate} kills/s for {seconds:g} s (within budget)")
            rows[str(rate)] = row = measure(rate, seconds, args.seed, args.scale, recovery_ms=recovery_ms)
            _say("demo", row)
    srows: dict[str, dict[str, Any]] = {}
    rates = tuple(int(r) for r in args.rates.split(",")) if args.rates else RATES
    for rate in rates:
        secs = args.sustained_seconds
        if secs is None:
            secs = 1.0 if args.quick else SUSTAINED_SECONDS.get(rate, 10.0)
        progress(f"sustained workload under {rate} kills/s for {secs:g} s (within budget)")
        srows[str(rate)] = row = measure_sustained(
            rate, secs, args.seed, groups=args.groups, recovery_ms=recovery_ms, gc_young_ms=args.gc_young_ms
        )
        _say("sustained", row)
    sustained = {
        "recovery_p50_ms": {k: v["recovery_ms"]["p50"] for k, v in srows.items()},
        "recovery_p99_ms": {k: v["recovery_ms"]["p99"] for k, v in srows.items()},
        "recovery_max_ms": {k: v["recovery_ms"]["max"] for k, v in srows.items()},
        "ack_p99_ms": {k: v["ack_ms"]["p99"] for k, v in srows.items()},
        "node_gc": {k: v["node_gc"] for k, v in srows.items()},
        "observer_cpu_ms_per_kill": {k: v["observer_cpu_ms_per_kill"] for k, v in srows.items()},
        "node_cpu_ms_per_kill": {k: v["node_cpu_ms_per_kill"] for k, v in srows.items()},
        "attempted": {k: v["attempted"] for k, v in srows.items()},
        "carried_out": {k: v["carried_out"] for k, v in srows.items()},
        "sustained_kills": sum(v["carried_out"] for v in srows.values()),
        "sustained_give_ups": sum(v["give_ups"] for v in srows.values()),
        "skipped_other": sum(v["skipped_other"] for v in srows.values()),
        "hypothesis_held": all(v["hypothesis_held"] for v in srows.values()),
        "workload": {
            "supervisors": args.groups,
            "killable": args.groups * _sustained.PER,
            "intensity": _sustained.INTENSITY,
            "period_s": _sustained.PERIOD,
            "gc_young_every_ms": args.gc_young_ms or None,
        },
        "details": srows,
    }
    progress("the agent's sampler on the sustained workload's tree (idle, in this process)")
    secs = 2.0 if args.quick else 6.0
    sustained["sampling"] = asyncio.run(_sustained.sampling_figures(groups=args.groups, seconds=secs))
    progress(f"  {sustained['sampling']}")
    p99 = sustained["recovery_p99_ms"]
    sustained["targets"] = {
        "sustained_kills": {"target": ">= 10000", "met": sustained["sustained_kills"] >= 10_000},
        "sustained_give_ups": {"target": "== 0", "met": sustained["sustained_give_ups"] == 0},
        "recovery_p99_ms_100": {"target": "<= 5", "met": (p99.get("100") or 1e9) <= 5},
        "recovery_p99_ms_1000": {"target": "<= 20", "met": (p99.get("1000") or 1e9) <= 20},
    }
    out: dict[str, Any] = {"bench": "chaos"}
    if rows:
        out.update(
            {
                "recovery_p50_ms": {k: v["recovery_ms"]["p50"] for k, v in rows.items()},
                "recovery_p99_ms": {k: v["recovery_ms"]["p99"] for k, v in rows.items()},
                "recovery_max_ms": {k: v["recovery_ms"]["max"] for k, v in rows.items()},
                "attempted": {k: v["attempted"] for k, v in rows.items()},
                "carried_out": {k: v["carried_out"] for k, v in rows.items()},
                "within_budget_kills": sum(v["carried_out"] for v in rows.values()),
                "within_budget_give_ups": sum(v["give_ups"] for v in rows.values()),
                "hypothesis_held": all(v["hypothesis_held"] for v in rows.values()),
                "details": rows,
            }
        )
    out.update({"sustained": sustained, "quick": bool(args.quick), "machine": machine()})
    emit(out)
    return 0

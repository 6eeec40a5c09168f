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
"""

from __future__ import annotations

import argparse
import os
import secrets
import selectors
import subprocess
import sys
import time
from typing import Any

from bench._util import ROOT, emit, machine, progress, stop_process
from observer.chaos.experiment import Experiment, Probe, kill_spec
from observer.chaos.runner import attached, run

RATES = (10, 100, 1000)


def _start_demo(token: str, seed: int, scale: int) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_AGENT_")}
    env.update(OBSERVER_AGENT_TOKEN=token, OBSERVER_DEMO_SEED=str(seed), OBSERVER_DEMO_SCALE=str(scale))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer.demo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT
    )
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + 30
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            if time.monotonic() > deadline or not sel.select(max(0.0, deadline - time.monotonic())):
                proc.kill()
                raise RuntimeError("the demo system did not start")
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the demo system exited ({proc.wait()})")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    return proc, line.split()[1]


def measure(rate: int, seconds: float, seed: int, scale: int, *, recovery_ms: float = 5000.0) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    proc, address = _start_demo(token, seed, scale)
    try:
        with attached(address, token) as (mgr, att):
            time.sleep(0.5)  # let the demo's traffic start
            exp = Experiment(
                title=f"demo under {rate} kills/s",
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
                settle_s=5.0 if recovery_ms < 5000 else 10.0,
                abort_on_deviation=False,
            )
            _, j = run(mgr, att, exp)
    finally:
        stop_process(proc)
    s = j["summary"]
    r = s["recovery_ms"]
    return {
        "rate": rate,
        "seconds": seconds,
        "attempted": s["attempted"],
        "carried_out": s["carried_out"],
        "recovered": s["recovered"],
        "skipped_budget": s["skipped"]["would_exceed_budget"],
        "skipped_other": sum(s["skipped"].values()) - s["skipped"]["would_exceed_budget"],
        "errors": s["errors"],
        "give_ups": s["give_ups"],
        "recovery_ms": r,
        "hypothesis_held": j["hypothesis_held"],
        "deviations": [d["message"] for d in j["deviations"]][:5],
        "peak_budget_use": {
            (b.get("name") or pid): f"{b['peak_used']}/{b['intensity']}" for pid, b in j["budgets"].items()
        },
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 s per rate (a smoke test)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds of killing per rate (default 4)")
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 4.0)
    rows: dict[str, dict[str, Any]] = {}
    for rate in RATES:
        progress(f"demo under {rate} kills/s for {seconds:g} s (within budget)")
        row = measure(rate, seconds, args.seed, args.scale, recovery_ms=2000.0 if args.quick else 5000.0)
        rows[str(rate)] = row
        r = row["recovery_ms"]
        progress(
            f"  attempted {row['attempted']}, carried out {row['carried_out']}, skipped (budget) "
            f"{row['skipped_budget']}, recovery p50 {r['p50']} ms p99 {r['p99']} ms, give-ups {row['give_ups']}"
        )
    emit(
        {
            "bench": "chaos",
            "recovery_p50_ms": {k: v["recovery_ms"]["p50"] for k, v in rows.items()},
            "recovery_p99_ms": {k: v["recovery_ms"]["p99"] for k, v in rows.items()},
            "recovery_max_ms": {k: v["recovery_ms"]["max"] for k, v in rows.items()},
            "attempted": {k: v["attempted"] for k, v in rows.items()},
            "carried_out": {k: v["carried_out"] for k, v in rows.items()},
            "within_budget_kills": sum(v["carried_out"] for v in rows.values()),
            "within_budget_give_ups": sum(v["give_ups"] for v in rows.values()),
            "hypothesis_held": all(v["hypothesis_held"] for v in rows.values()),
            "details": rows,
            "quick": bool(args.quick),
            "machine": machine(),
        }
    )
    return 0

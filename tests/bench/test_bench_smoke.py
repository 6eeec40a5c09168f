"""``python -m bench actors --quick`` runs and ends with one JSON line holding every figure.

Speed is never asserted here: the figures are only checked to be numbers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

KEYS = (
    "pingpong_vs_asyncio_queue",
    "call_vs_asyncio_queue",
    "pingpong_vs_pykka_ask",
    "call_vs_pykka_ask",
    "bytes_per_idle_process",
    "bytes_per_idle_asyncio_task",
    "spawn_us",
    "spawn_vs_create_task",
    "spawn_first_step_vs_create_task",
    "restart_p50_ms",
    "restart_p99_ms",
    "million_idle_processes_gb",
    "crash_reports_call_ratio",
    "flight_recorder_call_ratio",
    "traced_call_ratio",
    "untraced_call_ratio_while_tracing_others",
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_quick_run_ends_with_json_holding_every_figure() -> None:
    proc = _run("actors", "--quick")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert isinstance(result, dict)
    for key in KEYS:
        assert key in result, key
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    assert isinstance(result["details"], dict)
    targets = result["targets"]
    assert isinstance(targets, dict) and targets
    for key, row in targets.items():
        assert key in result
        assert isinstance(row["met"], bool)
    uv = result["uvloop"]  # the same ratios on uvloop (a dev dependency: installed here)
    for key in ("pingpong_vs_asyncio_queue", "call_vs_asyncio_queue", "spawn_first_step_vs_create_task"):
        assert isinstance(uv[key], float) and math.isfinite(uv[key]), (key, uv)


def test_unknown_benchmark_prints_usage_and_exits_2() -> None:
    proc = _run("no-such-bench")
    assert proc.returncode == 2
    assert "usage" in proc.stderr


def test_fanin_quick_run_ends_with_json_holding_its_figures() -> None:
    proc = _run("fanin", "--quick")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["nodes"] == 2 and result["processes"] >= 2000
    for key in ("update_p99_ms", "observer_cpu_fraction", "observer_rss_mb"):
        value = result[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert result["restarts_measured"] > 0
    by_s = result["update_max_ms_by_s"]  # the slowest update of each second of the window
    assert len(by_s) >= 6 and 0 < max(by_s) <= result["update_max_ms"] + 1


def test_history_writer_fold_only_reports_the_cpu_of_one_snapshot() -> None:
    proc = _run("history_writer", "--fold-only", "--processes", "2000", "--rounds", "1")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["processes"] == 2000
    assert result["live_fold_cpu_s"] > 0 and result["writer_fold_and_checkpoint_cpu_s"] > 0


def test_chaos_quick_run_ends_with_json_holding_its_figures() -> None:
    # the sustained part is covered at every rate by the next test: here one small rate keeps the run short
    proc = _run("chaos", "--quick", "--groups", "50", "--rates", "10")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("recovery_p50_ms", "recovery_p99_ms"):
        assert set(result[key]) == {"10", "100", "1000"}, key
        for rate, value in result[key].items():
            assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, (key, rate, value)
    assert result["within_budget_kills"] > 0
    assert result["within_budget_give_ups"] == 0
    assert result["sustained"]["sustained_give_ups"] == 0 and result["sustained"]["sustained_kills"] > 0
    for rate, row in result["details"].items():
        made = row["carried_out"] + row["errors"]  # an error: the victim was gone when the kill arrived
        assert row["attempted"] == made + row["skipped_budget"] + row["skipped_other"], rate


def test_chaos_sustained_quick_run_reports_kills_at_every_rate_and_no_give_up() -> None:
    proc = _run("chaos", "--sustained-only", "--quick", "--groups", "100")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "recovery_p99_ms" not in result  # the demo runs were left out
    s = result["sustained"]
    assert set(s["recovery_p99_ms"]) == {"10", "100", "1000"}
    for rate, value in s["recovery_p99_ms"].items():
        assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, (rate, value)
    assert s["sustained_kills"] == sum(s["carried_out"].values()) > 0
    assert s["sustained_give_ups"] == 0
    assert s["workload"]["killable"] == 1000
    assert s["workload"]["gc_young_every_ms"] == 20  # the node's young collections on a timer (bench/_sustained.py)
    for rate, gc_row in s["node_gc"].items():  # the node said how long its collections took
        assert set(gc_row) == {"collections_over_5ms", "longest_ms", "longest_cpu_ms", "slowest_1pct_during_gc"}
        assert gc_row["longest_ms"] >= 0 and gc_row["slowest_1pct_during_gc"] is not None, (rate, gc_row)
    for rate, row in s["details"].items():
        made = row["carried_out"] + row["errors"]
        assert row["attempted"] == made + row["skipped_budget"] + row["skipped_other"], rate
        assert row["carried_out"] > 0, rate
    assert set(s["targets"]) == {"sustained_kills", "sustained_give_ups", "recovery_p99_ms_100", "recovery_p99_ms_1000"}
    sampling = s["sampling"]  # the agent's sampler on the same tree: a sweep in steps
    assert sampling["processes"] == 1101 and sampling["sweeps"] >= 1 and sampling["steps"] >= sampling["sweeps"]
    assert sampling["first_sweep_longest_step_ms"] > 0 and sampling["first_sweep_ms"] > 0

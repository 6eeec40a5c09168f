"""``python -m bench agent --quick`` runs its cycles with a real agent and a
real observer process and ends with its keys, per-cycle ratios and their
spread; ``bench agent_storm_ic``'s script (the part run under callgrind)
carries out its kills and counts the events. Speed is never asserted."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _number(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_agent_quick_run_ends_with_json_holding_each_cycle_and_the_spread() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "agent", "--quick"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "throughput_with_agent_ratio",
        "throughput_idle_agent_ratio",
        "crash_to_observer_p99_ms",
        "host_us_per_event",
        "storm_throughput_ratio",
        "storm_event_p99_ms",
    ):
        assert _number(result[key]), (key, result[key])
    details = result["details"]
    assert len(details["ratios"]) == 2 and len(details["idle_agent_ratios"]) == 2  # one per cycle
    for spread in (details["ratio_spread"], details["idle_agent_ratio_spread"], details["event_storm"]["ratio_spread"]):
        assert spread["min"] <= spread["median"] <= spread["max"]
    assert details["pinned"] is None  # nothing pinned unless --pin
    assert details["crashes_measured"] > 0


def test_storm_instruction_count_script_kills_and_counts_the_events() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "agent_storm_ic", "--child", "10"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"^events (\d+) seconds (\S+)$", proc.stdout, re.M)
    assert m is not None, proc.stdout
    assert int(m.group(1)) >= 40  # each kill: exit, restart, spawn, link

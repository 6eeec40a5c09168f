"""``python -m bench agent_cpu --quick``: the scripted workload runs with a
real agent and a real observer process and reports its counts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_agent_cpu_quick_run_ends_with_json_holding_its_counts() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "agent_cpu", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("host_us_per_event", "drain_us_per_event", "writes_per_1000_events", "watchdog_wakes_per_s"):
        assert isinstance(result[key], int | float) and math.isfinite(result[key]), (key, result)
    assert result["drain_us_per_event"] > 0 and result["writes_per_1000_events"] > 0
    assert len(result["rounds"]["host_us"]) == 2

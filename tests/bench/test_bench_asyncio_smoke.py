"""``python -m bench asyncio --quick`` runs and ends with one JSON line holding its figures.

Speed is never asserted here: the figures are only checked to be numbers.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.bench.test_bench_smoke import _run

pytest.importorskip("aiohttp")

KEYS = (
    "http_rps_with_agent_ratio",
    "task_churn_with_agent_ratio",
    "task_crash_to_observer_p99_ms",
    "tasks_100k_snapshot_s",
)


def test_asyncio_quick_run_ends_with_json_holding_every_figure() -> None:
    proc = _run("asyncio", "--quick")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in KEYS:
        value = result[key]
        assert isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value), (key, value)
        assert value > 0, (key, value)
        assert isinstance(result["targets"][key]["met"], bool)
    assert result["details"]["crash"]["crashes_seen"] == 50
    assert result["details"]["snapshot"]["tasks_in_snapshot"] >= 20_000

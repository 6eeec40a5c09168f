"""``python -m bench trace --quick`` ends with one JSON line holding its two ratios."""

from __future__ import annotations

import json
import math

from tests.bench.test_bench_smoke import _run


def test_trace_quick_run_ends_with_json_holding_its_ratios() -> None:
    proc = _run("trace", "--quick")
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("traced_call_ratio", "untraced_call_ratio_while_tracing_others"):
        value = result[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
        assert key in result["targets"]
    assert result["frames_read"] > 0  # the observer was reading

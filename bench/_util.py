"""Small helpers shared by the benchmarks: statistics, memory probes, output."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""The repository root (where ``python -m bench`` works from)."""

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident set size of this process, from ``/proc/self/statm``."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def mem_available_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo``, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def proc_cpu_seconds(stat_path: str) -> float | None:
    """User + system CPU seconds from a Linux ``/proc/.../stat`` file (a
    process's or a thread's), None if it cannot be read."""
    try:
        with open(stat_path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def median(xs: Sequence[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    s = sorted(xs)
    if not s:
        raise ValueError("median of nothing")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100): the smallest sample with at
    least ``p`` percent of the samples at or below it."""
    s = sorted(xs)
    if not s:
        raise ValueError("percentile of nothing")
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def rnd(x: float, digits: int = 3) -> float:
    """Round to ``digits`` significant digits (for readable JSON)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, max(0, digits - 1 - math.floor(math.log10(abs(x)))))


def progress(msg: str) -> None:
    """One progress line (flushed: a long run shows where it is)."""
    print(f"# {msg}", flush=True)


def emit(result: dict[str, Any]) -> None:
    """Print the result as one JSON line (the last line of the run)."""
    print(json.dumps(result), flush=True)


def machine() -> dict[str, Any]:
    """What ran the benchmark."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def run_bench_json(args: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m bench <args>`` in a fresh interpreter and return the JSON
    object on its last stdout line (used for memory probes, so that each one
    starts from a clean heap)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench probe {args} failed (rc={proc.returncode}): {proc.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; close its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for f in (proc.stdin, proc.stdout):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

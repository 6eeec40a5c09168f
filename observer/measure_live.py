"""Measure kill -> ``batch`` latency through the whole stack, per async mode.

    python -m observer.measure_live [--kills 50] [--modes threading,eventlet]

For each mode: starts ``observer demo --allow-destructive-actions`` (a real
server, a real demo process), logs in, connects a python-socketio client to
``/live``, then ``--kills`` times kills a chat session (reason ``shutdown``:
a transient child, so it is not restarted and no supervisor budget is used)
through ``POST .../kill`` and times until a ``batch`` naming that exit
arrives. Prints the median and p90 of that latency and of the POST alone,
and batches/s received. Needs ``requests`` and ``python-socketio[client]``
(dev extras).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import requests
import socketio

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")


def _start(mode: str) -> tuple[subprocess.Popen[str], str, str]:
    cmd = [sys.executable, "-m", "observer", "demo", "--port", "0", "--no-browser", "--allow-destructive-actions"]
    proc = subprocess.Popen(
        [*cmd, "--async-mode", mode, "--scale", "2", "--seed", "1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        m = URL_RE.search(line)
        if m:
            return proc, m.group(1), m.group(2)
    raise RuntimeError("observer demo printed no URL")


def measure(mode: str, kills: int) -> dict[str, Any]:
    proc, base, token = _start(mode)
    try:
        http = requests.Session()
        http.post(f"{base}/login", data={"token": token}, timeout=10)
        deadline = time.monotonic() + 30
        sessions_sup = None
        while sessions_sup is None and time.monotonic() < deadline:
            hits = http.get(f"{base}/api/nodes/demo/search", params={"q": "sessions_sup"}, timeout=10).json()
            sessions_sup = next((h["pid"] for h in hits.get("matches", []) if h["name"] == "sessions_sup"), None)
        html = http.get(f"{base}/", timeout=10).text
        cfg = json.loads(re.search(r'id="config">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
        headers = {"X-CSRF-Token": cfg["csrf"]}
        exits: dict[str, float] = {}
        batches: list[float] = []
        cond = threading.Condition()

        def on_batch(msg: dict[str, Any]) -> None:
            now = time.perf_counter()
            with cond:
                batches.append(now)
                for ch in msg["changes"]:
                    if ch["kind"] == "exit" and ch["pid"] not in exits:
                        exits[ch["pid"]] = now
                cond.notify_all()

        client = socketio.Client()
        client.on("batch", on_batch, namespace="/live")
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        client.connect(base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"])
        client.emit("subscribe", {"node": "demo", "view": "overview"}, namespace="/live")
        rng = random.Random(1)
        lat, post = [], []
        started = time.perf_counter()
        for _ in range(kills):
            rows = http.get(
                f"{base}/api/nodes/demo/processes", params={"supervisor": sessions_sup, "limit": 500}, timeout=10
            ).json()["rows"]
            pid = rng.choice(rows)["pid"]
            time.sleep(rng.uniform(0, 0.3))  # out of phase with the batch rhythm
            t0 = time.perf_counter()
            r = http.post(f"{base}/api/nodes/demo/processes/{pid}/kill", json={"reason": "shutdown"}, headers=headers)
            post.append(time.perf_counter() - t0)
            if r.status_code != 200:
                continue
            with cond:
                cond.wait_for(lambda p=pid: p in exits, timeout=10)  # type: ignore[misc]
                if pid in exits:
                    lat.append(exits[pid] - t0)
        elapsed = time.perf_counter() - started
        client.disconnect()
        return {
            "mode": mode,
            "kills": len(lat),
            "latency_median_ms": round(statistics.median(lat) * 1000, 1),
            "latency_p90_ms": round(statistics.quantiles(lat, n=10)[-1] * 1000, 1),
            "post_median_ms": round(statistics.median(post) * 1000, 1),
            "batches_per_s": round(len(batches) / elapsed, 2),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m observer.measure_live")
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--modes", default="threading,eventlet")
    args = ap.parse_args()
    os.environ.pop("OBSERVER_LOGIN_TOKEN", None)
    for mode in args.modes.split(","):
        print(json.dumps(measure(mode, args.kills)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

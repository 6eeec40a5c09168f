"""One observer, many nodes: ``python -m bench fanin [--quick]``.

Starts ``--nodes`` node processes (``python -m bench._browser_node``: a root
supervisor over supervisors of idle workers, ``--processes`` each, with an
agent), one ``observer serve`` attached to all of them (a real gunicorn
server, its own process tree), and one python-socketio client per node playing
the browser (subscribed to the node's room, as the overview page is). Then
every node churns: it kills random workers at ``--churn`` lifecycle events a
second (each kill: exit, restart, spawn), for ``--duration`` seconds.

Figures (last line, JSON):

* ``update_p50_ms`` / ``update_p99_ms``: a restart in a node to the batch
  naming it at the client: the client's receive time minus the time the
  restart event carries (stamped in the node; same machine, same clock);
* ``observer_cpu_fraction``: CPU seconds of the observer's process tree
  (gunicorn master and worker) over the measured wall time (1.0 = one core);
* ``observer_rss_mb``: the tree's resident memory at the end (and its peak,
  sampled every second);
* ``nodes``, ``processes`` (as the observer counts them), events seen,
  batches, the machine.

Everything runs on this one machine, so node processes, the observer and the
clients compete for the same cores: the figures say what this machine did,
not what the observer needs.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._util import ROOT, emit, machine, percentile, proc_cpu_seconds, progress, rnd, stop_process

AGENT_RE = re.compile(r"agent (\S+:\d+) processes=(\d+)")
URL_RE = re.compile(r"open (http://127\.0\.0\.1:\d+)/login")


def _tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from ``/proc/*/task/*/children``)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def _cpu_seconds(pids: list[int]) -> float:
    return sum(s for p in pids if (s := proc_cpu_seconds(f"/proc/{p}/stat")) is not None)


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _read_until(proc: subprocess.Popen[str], pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    result: list[re.Match[str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = pattern.search(line)
            if m:
                result.append(m)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if not result:
        raise RuntimeError(f"no line matching {pattern.pattern!r} within {timeout}s")
    return result[0]


class Browser:
    """A python-socketio client subscribed to one node, timing restarts."""

    def __init__(self, base: str, cookie: str, node: str) -> None:
        import socketio

        self.node = node
        self.latencies: list[float] = []
        self.stamps: list[tuple[float, float]] = []
        """(receive time, latency ms) of each restart measured: when the slow ones came."""
        self.batches = 0
        self.measuring = False
        self.client = socketio.Client()
        self.client.on("batch", self._on_batch, namespace="/live")
        self.client.connect(base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"])
        ack = self.client.call("subscribe", {"node": node, "view": "overview"}, namespace="/live", timeout=30)
        if not ack.get("ok"):
            raise RuntimeError(f"subscribe {node}: {ack}")

    def _on_batch(self, msg: dict[str, Any]) -> None:
        now = time.time()
        self.batches += 1
        if not self.measuring:
            return
        for c in msg.get("changes") or []:
            if c.get("kind") == "restart":
                t = (c.get("data") or {}).get("time")
                if isinstance(t, int | float):
                    self.latencies.append((now - t) * 1000)
                    self.stamps.append((now, (now - t) * 1000))

    def close(self) -> None:
        self.client.disconnect()


def _session_cookie(base: str, login: str) -> str:
    import requests  # a dev dependency, like the rest of this benchmark's client side

    http = requests.Session()
    deadline = time.monotonic() + 600
    while True:
        resp = http.post(f"{base}/login", data={"token": login}, timeout=60)
        # 503: the history writer is still busy with the attach snapshots' checkpoints (a login is written down)
        if resp.status_code != 503 or time.monotonic() > deadline:
            break
        progress("login: 503 (the history writer is busy), again in 2 s")
        time.sleep(2)
    resp.raise_for_status()
    return "; ".join(f"{k}={v}" for k, v in http.cookies.items())


def _cluster(http: Any, base: str) -> dict[str, Any] | None:
    """``/api/cluster``, or None if the request failed: a gunicorn gthread worker under a big
    snapshot's load may drop a kept-alive connection just as it is reused (a reset, not an answer)."""
    import requests

    try:
        resp = http.get(f"{base}/api/cluster", timeout=120)
        resp.raise_for_status()
        out: dict[str, Any] = resp.json()
        return out
    except requests.RequestException as exc:
        progress(f"/api/cluster failed ({type(exc).__name__}); asking again")
        return None


def _by_second(stamps: list[tuple[float, float]], t0: float, duration: float) -> list[float]:
    """The slowest update received in each second of the measured window (0 for a second without)."""
    out = [0.0] * max(1, math.ceil(duration))
    for when, ms in stamps:
        i = min(len(out) - 1, max(0, int(when - t0)))
        out[i] = max(out[i], rnd(ms, 0))
    return out


def _py_spy(pid: int, duration: float, out: str) -> subprocess.Popen[bytes]:
    """``py-spy record`` of the observer (``pid``: its worker) for ``duration`` seconds, to ``out`` (speedscope:
    each thread's samples in time order, so a slow update's second can be read off the recording).
    ``--nonblocking``: without it py-spy stops the process for every sample, and a hundred threads
    sampled 50 times a second left the observer a tenth of a core (updates 15 s late)."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    cmd = [exe, "record", "--pid", str(pid), "--nonblocking", "--threads", "--idle", "--format", "speedscope"]
    cmd += ["--rate", "50", "--duration", str(math.ceil(duration)), "--output", out]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(
    nodes: int,
    per_node: int,
    churn: float,
    duration: float,
    sample_hz: float | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    import requests

    groups = max(1, per_node // 100)
    per = max(1, per_node // groups)
    token = secrets.token_urlsafe(32)
    login = secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    node_procs: list[subprocess.Popen[str]] = []
    observer: subprocess.Popen[str] | None = None
    browsers: list[Browser] = []
    with tempfile.TemporaryDirectory(prefix="bench-fanin-") as tmp:
        try:
            progress(f"starting {nodes} nodes x {groups * per} processes")
            for _ in range(nodes):
                node_env = env | {"OBSERVER_AGENT_TOKEN": token, "BENCH_GROUPS": str(groups), "BENCH_PER": str(per)}
                if sample_hz is not None:
                    node_env["BENCH_SAMPLE_HZ"] = str(sample_hz)
                node_procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench._browser_node"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        env=node_env,
                        cwd=ROOT,
                    )
                )
            addresses = [_read_until(p, AGENT_RE, 600).group(1) for p in node_procs]
            tokens = Path(tmp) / "agents"
            tokens.write_text(token)
            cmd = [
                sys.executable,
                "-m",
                "observer",
                "serve",
                "--port",
                "0",
                "--no-browser",
                "--node-token-file",
                str(tokens),
            ]
            cmd += ["--allow-destructive-actions"]  # the nodes have an operator token only
            for i, a in enumerate(addresses):
                cmd += ["--attach", f"n{i}={a}"]
            progress("starting the observer")
            observer = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, text=True, env=env | {"OBSERVER_LOGIN_TOKEN": login}, cwd=ROOT
            )
            base = _read_until(observer, URL_RE, 120).group(1)
            t_attach = time.monotonic()
            http = requests.Session()
            http.post(f"{base}/login", data={"token": login}, timeout=30)
            expected = nodes * groups * per
            deadline = time.monotonic() + 600 + expected / 1000  # a million: ~27 minutes at most
            last_note = 0.0
            while True:
                cl = _cluster(http, base)
                total = cl["totals"]["processes"] if cl else 0
                if cl and cl["totals"]["up"] == nodes and total >= expected:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not attached: {cl and cl['totals']}")
                if time.monotonic() - last_note >= 30:
                    last_note = time.monotonic()
                    progress(f"attaching: {cl and cl['totals']} after {time.monotonic() - t_attach:.0f} s")
                time.sleep(1)
            attach_s = time.monotonic() - t_attach
            progress(f"attached in {attach_s:.0f} s: {cl['totals']}")
            # one login session per simulated browser, as real browsers have (a session may hold 8 sockets)
            browsers = [Browser(base, _session_cookie(base, login), f"n{i}") for i in range(nodes)]
            tree = _tree_pids(observer.pid)
            rss_before = _rss_mb(tree)
            for p in node_procs:
                assert p.stdin is not None
                p.stdin.write(f"churn {churn}\n")
                p.stdin.flush()
            time.sleep(min(3.0, duration / 3))  # settle
            for b in browsers:
                b.measuring = True
            tree = _tree_pids(observer.pid)
            spy = _py_spy(max(tree, key=lambda p: _rss_mb([p])), duration, profile) if profile else None
            cpu0, t0, wall0 = _cpu_seconds(tree), time.monotonic(), time.time()
            peak = 0.0
            progress(f"churning {churn:g} events/s per node for {duration:g} s (from {wall0:.3f})")
            while time.monotonic() - t0 < duration:
                time.sleep(1.0)
                peak = max(peak, _rss_mb(_tree_pids(observer.pid)))
            tree = _tree_pids(observer.pid)
            cpu1, t1 = _cpu_seconds(tree), time.monotonic()
            for b in browsers:
                b.measuring = False
            for p in node_procs:
                assert p.stdin is not None
                p.stdin.write("churn 0\n")
                p.stdin.flush()
            rss = _rss_mb(tree)
            if spy is not None:
                try:
                    spy.wait(300)
                except subprocess.TimeoutExpired:
                    spy.kill()
            lat = [x for b in browsers for x in b.latencies]
            cl = _cluster(http, base) or cl
            if not lat:
                raise RuntimeError("no restart reached a client")
            return {
                "nodes": nodes,
                "processes": cl["totals"]["processes"],
                "update_p50_ms": rnd(percentile(lat, 50)),
                "update_p99_ms": rnd(percentile(lat, 99)),
                "update_max_ms": rnd(max(lat)),
                "update_max_ms_by_s": _by_second([s for b in browsers for s in b.stamps], wall0, t1 - t0),
                "restarts_measured": len(lat),
                "churn_events_per_s_per_node": churn,
                "agent_sample_hz": sample_hz,
                "duration_s": rnd(t1 - t0),
                "observer_cpu_fraction": rnd((cpu1 - cpu0) / (t1 - t0)),
                "observer_rss_mb": rnd(rss),
                "observer_rss_peak_mb": rnd(max(peak, rss)),
                "observer_rss_before_churn_mb": rnd(rss_before),
                "attach_s": rnd(attach_s),
                "batches": sum(b.batches for b in browsers),
                "machine": machine(),
            }
        finally:
            for b in browsers:
                try:
                    b.close()
                except Exception:
                    pass
            for p in ([observer] if observer is not None else []) + node_procs:
                stop_process(p, 20)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench fanin", description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--processes", type=int, default=10_000, help="per node")
    ap.add_argument("--churn", type=float, default=30.0, help="lifecycle events per second per node")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds measured")
    ap.add_argument("--quick", action="store_true", help="2 nodes x 1,000 processes, 6 s (a smoke test)")
    ap.add_argument(
        "--sample-hz",
        type=float,
        default=None,
        help="the nodes' agents' sampling scans a second (default the agent's, 4): each walks every process, "
        "so twenty 50,000-process nodes on a small machine starve themselves; 0.5 leaves the cores to the observer",
    )
    ap.add_argument(
        "--profile",
        metavar="FILE",
        default=None,
        help="record the observer with py-spy (a dev dependency) during the measured window, "
        "to FILE (speedscope JSON, one profile per thread in time order)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.processes, args.duration = 2, 1000, 6.0
    if args.nodes < 1 or args.processes < 1 or args.duration <= 0 or args.churn <= 0:
        ap.error("--nodes, --processes, --duration and --churn must be positive")
    if args.sample_hz is not None and args.sample_hz <= 0:
        ap.error("--sample-hz must be positive")
    emit(run(args.nodes, args.processes, args.churn, args.duration, args.sample_hz, args.profile))
    return 0

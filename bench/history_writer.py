"""The history writer after a big attach: logins behind checkpoints, and the checkpoint burst.

    python -m bench history_writer [--nodes 20] [--processes 5000] [--interval 10] [--seconds 25] [--rate 100]
    python -m bench history_writer --fold-only [--processes 50000] [--rounds 3]

In this process (no server, no agent): a :class:`observer.store.HistoryStore` on
a fresh SQLite file is fed ``--nodes`` snapshots of ``--processes`` each at the
same instant (an observer attaching to them all), then ``--rate`` events a
second on every node (enough that every node's timed checkpoint is due each
interval: a tenth of its processes, see ``HistoryStore._worth``) for
``--seconds``, with timed checkpoints every ``--interval`` seconds. Meanwhile a
"login" thread writes a session row (:func:`observer.db.sessions.create`, what
``POST /login`` waits for) every 0.2 s.

``--fold-only``: no database, no threads: the CPU (``time.thread_time``) of one
node's snapshot of ``--processes`` as the observer pays it at the attach, the
live model's fold (:class:`observer.model.NodeModel`) and the history writer's
(its queue's :func:`observer.model.snapshot.prepare`, the reducer, the
checkpoint's JSON), best of three; under ``valgrind --tool=callgrind`` (one
round: ``--rounds 1``) the instruction counts compare two trees exactly.

Figures: ``login_max_ms`` / ``login_p99_ms`` over the whole run (before the fast
lane a login waited for every queued checkpoint: seconds, and the server's 5 s
write timeout answered 503), ``logins_failed``; ``writer_cpu_max_s_per_s`` the
most CPU the writer thread used in any one second after the attach checkpoints
were written (the timed checkpoints' burst: all nodes' in the same second
before, one node's at a time now) and ``writer_cpu_mean_s_per_s`` over the same
seconds; ``checkpoints_max_per_s`` the most timed checkpoints committed in one
second. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench._util import emit, machine, percentile, progress, rnd
from observer.db import history as history_db
from observer.db import sessions as session_db
from observer.model import NodeModel, checkpoint_json, history_state, reduce
from observer.model.snapshot import prepare
from observer.store import HistoryStore


def _records(n: int) -> list[dict[str, Any]]:
    base: dict[str, Any] = {"name": None, "kind": "worker", "status": "waiting", "parent": None, "restarts": 0}
    base |= {"mailbox": 0, "monitors": [], "trap_exit": False, "started_at": 1000.0, "budget": None}
    sups = [
        base | {"pid": f"<0.{i}.0>", "label": "Sup", "kind": "supervisor", "supervisor": None, "child_id": None}
        for i in range(max(1, n // 100))
    ]
    ns = len(sups)
    workers = [
        base | {"pid": f"<0.{i}.0>", "label": "w", "supervisor": f"<0.{i % ns}.0>", "child_id": f"w{i}"}
        for i in range(ns, n)
    ]
    for w in workers:
        w["links"] = [w["supervisor"]]
    kids: dict[str, list[str]] = {}
    for w in workers:
        kids.setdefault(w["supervisor"], []).append(w["pid"])
    for s in sups:
        s["links"] = kids.get(s["pid"], [])
    return sups + workers


def _fold_only(n: int, rounds: int) -> dict[str, Any]:
    procs = _records(n)
    msgs: list[dict[str, Any]] = [{"t": "snapshot_begin", "seq": 1, "count": n, "node": {"node_id": 1}}]
    msgs += [{"t": "snapshot_chunk", "seq": 1, "procs": procs[i : i + 2000]} for i in range(0, n, 2000)]
    msgs.append({"t": "snapshot_end", "seq": 1, "names": {}})

    def live() -> None:
        model = NodeModel("n")
        for m in msgs:
            model.apply(m)

    def writer() -> None:
        st = history_state()
        for m in msgs:
            if m["t"] == "snapshot_chunk":  # as HistoryStore.record queues it
                m = {**m, "procs": [prepare(r) for r in m["procs"]]}
            st, _ = reduce(st, m, 1.0)
        checkpoint_json(st)

    out: dict[str, Any] = {"bench": "history_writer", "fold_only": True, "processes": n}
    for name, fn in (("live_fold_cpu_s", live), ("writer_fold_and_checkpoint_cpu_s", writer)):
        best = math.inf
        for _ in range(rounds):
            t0 = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t0)
        out[name] = rnd(best, 3)
    return out | {"machine": machine()}


def _thread_cpu(ident: int) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench history_writer")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--processes", type=int, default=5000, help="per node")
    ap.add_argument("--interval", type=float, default=10.0, help="checkpoint_interval (s)")
    ap.add_argument("--seconds", type=float, default=25.0, help="how long the events trickle after the attach")
    ap.add_argument("--rate", type=float, default=100.0, help="events per second on each node")
    ap.add_argument("--fold-only", action="store_true", help="one node's snapshot folds, CPU only (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="--fold-only: the best of this many")
    a = ap.parse_args(argv)
    if a.fold_only:
        emit(_fold_only(a.processes, max(1, a.rounds)))
        return 0
    procs = _records(a.processes)
    with tempfile.TemporaryDirectory() as tmp:
        store = HistoryStore(str(Path(tmp) / "history.db"), checkpoint_interval=a.interval, checkpoint_events=10**9)
        writer = next(t for t in threading.enumerate() if t.name == "observer-db-writer")
        assert writer.ident is not None
        cps: list[float] = []
        store.db.on_commit(lambda rows: cps.extend(time.monotonic() for s, _ in rows if s == history_db.CHECKPOINT_SQL))
        logins: list[float] = []
        failed = 0
        stop = threading.Event()

        def login() -> None:
            nonlocal failed
            i = 0
            while not stop.is_set():
                now = time.time()
                row: dict[str, Any] = {"id": f"s{i}", "token": "fp", "who": "ops", "role": "admin"}
                row |= {"created": now, "last_seen": now, "expires": now + 3600}
                t0 = time.monotonic()
                try:
                    session_db.create(store.db, row)
                    logins.append(time.monotonic() - t0)
                except Exception:
                    failed += 1
                i += 1
                stop.wait(0.2)

        progress(f"attaching {a.nodes} nodes x {a.processes} processes")
        t_attach = time.monotonic()
        lt = threading.Thread(target=login, daemon=True)
        lt.start()
        for n in range(a.nodes):
            node = f"n{n}"
            store.record(node, {"t": "snapshot_begin", "seq": 1, "count": len(procs), "node": {"node_id": n}})
            for i in range(0, len(procs), 2000):
                store.record(node, {"t": "snapshot_chunk", "seq": 1, "procs": procs[i : i + 2000]})
            store.record(node, {"t": "snapshot_end", "seq": 1, "names": {}})
        store.flush(600)
        attached = time.monotonic()
        progress(f"attached in {attached - t_attach:.1f}s; events for {a.seconds}s")
        cpu: list[tuple[float, float]] = []
        seq = 2
        while time.monotonic() - attached < a.seconds:
            for _ in range(max(1, round(a.rate * 0.05))):
                for n in range(a.nodes):
                    pid = f"<0.{seq % a.processes}.0>"
                    store.record(f"n{n}", {"t": "ev", "seq": seq, "ev": "status", "pid": pid, "status": "running"})
                seq += 1
            cpu.append((time.monotonic(), _thread_cpu(writer.ident)))
            time.sleep(0.05)
        stop.set()
        lt.join(10)
        store.close(60)
    per_s = [
        (c2 - c1) / (t2 - t1)
        for (t1, c1), (t2, c2) in zip(cpu, cpu[20:], strict=False)  # 1 s windows (20 x 0.05 s)
    ]
    timed = [t for t in cps if t > attached]
    per_sec: dict[int, int] = {}
    for t in timed:
        per_sec[int(t)] = per_sec.get(int(t), 0) + 1
    emit(
        {
            "bench": "history_writer",
            "nodes": a.nodes,
            "processes": a.nodes * a.processes,
            "interval_s": a.interval,
            "attach_s": rnd(attached - t_attach, 2),
            "logins": len(logins),
            "logins_failed": failed,
            "login_p99_ms": rnd(percentile(logins, 99) * 1000, 1) if logins else None,
            "login_max_ms": rnd(max(logins) * 1000, 1) if logins else None,
            "timed_checkpoints": len(timed),
            "checkpoints_max_per_s": max(per_sec.values(), default=0),
            "writer_cpu_max_s_per_s": rnd(max(per_s, default=0.0), 3),
            "writer_cpu_mean_s_per_s": rnd(sum(per_s) / len(per_s), 3) if per_s else None,
            "machine": machine(),
        }
    )
    return 0

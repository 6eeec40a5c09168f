"""The history writer under bulk work: a login (a session row, an audit row) does not wait
behind queued checkpoints (the fast lane of observer/db/database.py, "Priority"), and the
timed checkpoints of nodes attached together are spread over the interval, not written
all in the same second (observer/store.py, ``HistoryStore._tick``). Real SQLite files."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

from observer.db import history as history_db
from observer.db import sessions as session_db
from observer.model import checkpoint_json, replay
from observer.sessions import SessionStore
from observer.store import HistoryStore
from tests.observer import ev, linked, rec, snapshot, sup, wait_for

BUSY_SECONDS = 15.0
"""How much checkpoint work is queued ahead of the login (at least)."""


def _big_state(n: int) -> Any:
    """The history model of a node of ``n`` processes under 100 supervisors."""
    sups = [sup(f"<0.{i}.0>") for i in range(100)]
    workers = [rec(f"<0.{i}.0>", supervisor=f"<0.{i % 100}.0>", child_id=f"w{i}") for i in range(100, n)]
    return replay([(m, 1000.0) for m in snapshot(linked(sups + workers), seq=1)])


def _session(sid: str) -> dict[str, Any]:
    now = time.time()
    return {
        "id": sid,
        "token": "fp",
        "who": "ops",
        "role": "admin",
        "created": now,
        "last_seen": now,
        "expires": now + 3600,
    }


def test_a_login_goes_through_while_the_writer_is_busy_with_checkpoints(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.db"), checkpoint_interval=1e9)
    db = store.db
    try:
        state = _big_state(20_000)
        t0 = time.process_time()
        checkpoint_json(state)
        one = max(time.process_time() - t0, 0.01)  # the CPU of one checkpoint of this node
        n = min(5000, math.ceil(BUSY_SECONDS / one))
        stop = threading.Event()
        busy = threading.Event()
        done: list[int] = []

        def checkpoint_work() -> None:  # what the writer does after a big attach
            busy.set()
            if not stop.is_set():
                checkpoint_json(state, db.run_urgent)
                done.append(1)

        for _ in range(n):
            db.call_soon(checkpoint_work)
        wait_for(busy.is_set, what="the writer to start on the checkpoints")

        # a login (what POST /login does: its session row, blocking), then an action's audit row
        t0 = time.monotonic()
        sid = SessionStore(db).start("the-token", "ops", "admin", addr="127.0.0.1", agent="test")
        login = time.monotonic() - t0
        t0 = time.monotonic()
        aid = store.audit("ops", "127.0.0.1", "kill", "<0.5.0>", node="n1")
        audit = time.monotonic() - t0
        still_queued = n - len(done)
        stop.set()  # the rest of the queued work returns at once

        bound = 1.0 + 2 * one  # at most a slice or two of one checkpoint, on a loaded machine
        assert login < bound, f"the login waited {login:.2f}s behind {n} checkpoints of {one:.3f}s"
        assert audit < bound, f"the audit row waited {audit:.2f}s"
        assert still_queued > n // 2, "the bulk work was over: the test proved nothing"
        # nothing lost, nothing reordered within the bulk lane
        assert store.flush(30)
        row = session_db.get(db, sid)
        assert row is not None and row["who"] == "ops"
        assert [a["id"] for a in store.audits()] == [aid]
    finally:
        store.close()


def test_blocking_writes_queued_at_close_are_written_not_dropped(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.db"))
    db = store.db
    gate, busy = threading.Event(), threading.Event()

    def hold() -> None:  # the writer is busy until the logins are all waiting
        busy.set()
        gate.wait(10)

    db.call_soon(hold)
    wait_for(busy.is_set, what="the writer to be busy")
    results: list[Exception | None] = []

    def login(i: int) -> None:
        try:
            session_db.create(db, _session(f"s{i}"))
            results.append(None)
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=login, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    wait_for(lambda: db._urgent.qsize() == 5, what="the logins to be queued")
    gate.set()
    store.close()  # at once: the logins waiting are written before the writer stops
    for t in threads:
        t.join(10)
    assert results == [None] * 5
    reopened = HistoryStore(str(tmp_path / "history.db"))
    try:
        assert all(session_db.get(reopened.db, f"s{i}") is not None for i in range(5))
    finally:
        reopened.close()


def test_timed_checkpoints_of_nodes_attached_together_are_spread_over_the_interval(tmp_path: Path) -> None:
    interval = 2.0
    store = HistoryStore(str(tmp_path / "history.db"), checkpoint_interval=interval, checkpoint_events=10**9)
    commits: list[float] = []
    lock = threading.Lock()

    def committed(rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        with lock:
            commits.extend(time.monotonic() for sql, _ in rows if sql == history_db.CHECKPOINT_SQL)

    store.db.on_commit(committed)
    nodes = [f"n{i}" for i in range(10)]
    try:
        for node in nodes:  # ten nodes attached at the same instant: ten checkpoints now
            for m in snapshot(linked([sup("<0.1.0>"), rec("<0.2.0>", supervisor="<0.1.0>")]), seq=1):
                store.record(node, m)
        assert store.flush()
        wait_for(lambda: len(commits) >= len(nodes), what="the attach checkpoints")
        start = time.monotonic()
        seq = 2
        while time.monotonic() - start < 1.6 * interval:  # every node has something new all along
            for node in nodes:
                store.record(node, ev("spawn", seq, pid=f"<0.{seq}.0>", label="w", time=3000.0 + seq))
            seq += 1
            store.flush()
        with lock:
            timed = sorted(t for t in commits if t >= start)
        assert len(timed) >= len(nodes) // 2, f"only {len(timed)} timed checkpoints"
        # before: every node's falls in the same tick; now at most one a tick, at its node's phase
        per_tick: dict[int, int] = {}
        for t in timed:
            per_tick[int(t / 0.05)] = per_tick.get(int(t / 0.05), 0) + 1
        assert max(per_tick.values()) <= 2, f"checkpoints bunched: {timed}"
        assert timed[-1] - timed[0] >= interval / 4, f"not spread: {[round(t - start, 2) for t in timed]}"
    finally:
        store.close()


def test_big_rows_are_committed_after_the_item_that_buffered_them(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.db"))
    db = store.db
    db.batch_bytes = 1000
    first, gate, busy = threading.Event(), threading.Event(), threading.Event()

    def checkpoint() -> None:  # as the store does: a checkpoint's body counts its bytes
        db.buffer(history_db.CHECKPOINT_SQL, ("n1", 1.0, 1, 1, '{"v":2}'), size=2000)

    def hold() -> None:
        busy.set()
        gate.wait(10)

    try:
        db.call_soon(first.wait, 10)
        wait_for(lambda: db.stats()["pending"] == 0, what="the writer to take the first item")
        db.call_soon(checkpoint)
        db.call_soon(hold)  # queued together: the writer's next round holds both
        first.set()
        wait_for(busy.is_set, what="the writer to be busy")
        rows = db.execute("SELECT node, json FROM checkpoints")
        assert rows == [{"node": "n1", "json": '{"v":2}'}], "the big row waited for the end of the round"
    finally:
        first.set()
        gate.set()
        store.close()


def test_a_quiet_big_node_is_not_checkpointed_again_for_a_few_events(tmp_path: Path) -> None:
    interval = 0.3
    store = HistoryStore(str(tmp_path / "history.db"), checkpoint_interval=interval)
    counts: dict[str, int] = {}

    def committed(rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        for sql, row in rows:
            if sql == history_db.CHECKPOINT_SQL:
                counts[row[0]] = counts.get(row[0], 0) + 1

    store.db.on_commit(committed)
    try:
        sups = [sup("<0.1.0>")]
        workers = [rec(f"<0.{i}.0>", supervisor="<0.1.0>", child_id=f"w{i}") for i in range(2, 1002)]
        for node in ("big", "small"):
            for m in snapshot(linked(sups + (workers if node == "big" else workers[:5])), seq=1):
                store.record(node, m)
        for seq in range(2, 7):  # five events each: a tenth of "small", not of "big"
            for node in ("big", "small"):
                store.record(node, ev("status", seq, pid="<0.2.0>", status="running"))
        assert store.flush()
        wait_for(lambda: counts.get("small", 0) >= 2, timeout=20, what="the small node's timed checkpoint")
        # the absence of a checkpoint: let three intervals pass (the big node's turn comes and goes)
        threading.Event().wait(3 * interval)
        assert store.flush()
        assert counts.get("big") == 1, "a checkpoint of 1,000 processes for five events"
        for seq in range(7, 120):  # a hundred more events: now worth it
            store.record("big", ev("status", seq, pid="<0.2.0>", status="running"))
        wait_for(lambda: counts.get("big", 0) >= 2, timeout=20, what="the big node's timed checkpoint")
        assert store.flush()
        at = store.tree_at("big", time.time())
        assert at is not None and at["replayed"] < 120 and len(at["procs"]) == 1001
    finally:
        store.close()

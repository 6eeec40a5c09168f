"""HistoryStore: round trips, time travel, reopen, audit, and a full or read-only disk.

The tests taking ``history_where`` run on SQLite and on a real PostgreSQL
database (see tests/conftest.py); the disk failures are SQLite's."""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from observer.db import open_backend
from observer.model.snapshot import FREEZE_AT
from observer.store import SCHEMA_VERSION, AuditError, HistoryStore, StoreError
from tests.observer import ev, linked, rec, snapshot, sup, wait_for


def P(i: int) -> str:
    return f"<0.{i}.0>"


@pytest.fixture
def store(history_where: str) -> Iterator[HistoryStore]:
    s = HistoryStore(history_where)
    yield s
    s.close()


def base_records() -> list[dict[str, Any]]:
    return linked(
        [
            sup(P(1), name="top"),
            rec(P(2), supervisor=P(1), child_id="a", label="Alpha"),
            rec(P(3), supervisor=P(1), child_id="b", label="Beta", name="beta"),
        ]
    )


def record_all(s: HistoryStore, node: str, msgs: list[dict[str, Any]]) -> None:
    for m in msgs:
        s.record(node, m)


def test_round_trip_events_crashes_and_search(store: HistoryStore) -> None:
    record_all(store, "n1", snapshot(base_records(), seq=5))
    record_all(
        store,
        "n1",
        [
            ev("spawn", 6, pid=P(4), label="Gamma", supervisor=P(1), child_id="c", kind="worker"),
            ev("link", 7, a=P(4), b=P(1)),
            ev(
                "exit",
                8,
                pid=P(3),
                reason="ZeroDivisionError('division by zero')",
                reason_kind="exception",
                exception="ZeroDivisionError",
                traceback="Traceback...\n  in compute_secret_ratio\nZeroDivisionError",
            ),
            ev("restart", 9, supervisor=P(1), child_id="b", old_pid=P(3), new_pid=P(5), restarts=1),
            {"t": "samples", "rows": [[P(2), 1, 1, 0, 0, 0.0, "waiting"]], "node": None},  # not stored
            {"t": "gap", "dropped": 3},
        ],
    )
    record_all(store, "n2", [*snapshot([rec(P(1))], seq=1), ev("spawn", 2, pid=P(2), label="other")])
    assert store.flush()
    evs = store.events(node="n1")
    assert [e["kind"] for e in evs] == ["gap", "restart", "exit", "link", "spawn", "snapshot"] or len(evs) == 6
    assert {e["kind"] for e in evs} == {"snapshot", "spawn", "link", "exit", "restart", "gap"}
    assert [e["kind"] for e in store.events(node="n1", kinds=["exit", "restart"])] in (
        ["restart", "exit"],
        ["exit", "restart"],
    )
    hit = store.events(q="compute_secret")
    assert len(hit) == 1 and hit[0]["pid"] == P(3) and hit[0]["proc_name"] == "beta"
    assert [e["kind"] for e in store.events(node="n1", pid=P(4), kinds=["spawn", "link"])] != []
    assert store.events(node="n1", since=2008.5, until=2009.5)[0]["kind"] == "restart"
    assert store.events(kinds=[]) == []
    assert len(store.events(node="n2")) == 2
    crashes = store.crashes(q="zerodivision")
    assert len(crashes) == 1
    c = crashes[0]
    assert c["pid"] == P(3) and c["name"] == "beta" and c["label"] == "Beta" and c["supervisor"] == P(1)
    assert "compute_secret_ratio" in c["traceback"]
    assert store.crashes(q="nothing-like-this") == []
    assert sorted(store.nodes()) == ["n1", "n2"]
    st = store.stats()
    assert st["healthy"] and st["pending"] == 0 and st["dropped"] == 0


@pytest.mark.parametrize("checkpoint_events", [2, 10_000])
def test_tree_at_before_and_after_a_kill(history_where: str, checkpoint_events: int) -> None:
    s = HistoryStore(history_where, checkpoint_events=checkpoint_events)
    try:
        t0 = time.time()
        record_all(s, "n", snapshot(base_records(), seq=5, names={"top": P(1), "beta": P(3)}))
        s.flush()
        record_all(
            s,
            "n",
            [
                ev("spawn", 6, pid=P(4), label="Gamma", supervisor=P(1), child_id="c", time=t0 + 10),
                ev("link", 7, a=P(4), b=P(1), time=t0 + 10),
                ev("register", 8, name="gamma", pid=P(4), time=t0 + 11),
                ev("exit", 9, pid=P(3), reason="'killed'", reason_kind="killed", time=t0 + 20),
                ev("spawn", 10, pid=P(5), label="Beta", supervisor=P(1), child_id="b", restarts=1, time=t0 + 21),
                ev("restart", 11, supervisor=P(1), child_id="b", old_pid=P(3), new_pid=P(5), restarts=1, time=t0 + 21),
            ],
        )
        assert s.flush()

        def pids(t: float) -> set[str]:
            res = s.tree_at("n", t)
            assert res is not None
            return {r["pid"] for r in res["procs"]}

        assert s.tree_at("n", t0 - 100) is None
        assert pids(t0 + 5) == {P(1), P(2), P(3)}
        assert pids(t0 + 15) == {P(1), P(2), P(3), P(4)}
        before = s.tree_at("n", t0 + 19.9)
        assert before is not None
        assert before["names"] == {"top": P(1), "beta": P(3), "gamma": P(4)}
        top = next(r for r in before["procs"] if r["pid"] == P(1))
        assert set(top["links"]) == {P(2), P(3), P(4)}
        after = s.tree_at("n", t0 + 20.5)
        assert after is not None
        assert {r["pid"] for r in after["procs"]} == {P(1), P(2), P(4)}
        assert "beta" not in after["names"]
        assert P(3) not in next(r for r in after["procs"] if r["pid"] == P(1))["links"]
        last = s.tree_at("n", t0 + 30)
        assert last is not None
        assert {r["pid"] for r in last["procs"]} == {P(1), P(2), P(4), P(5)}
        assert next(r for r in last["procs"] if r["pid"] == P(5))["restarts"] == 1
        if checkpoint_events == 2:
            assert last["checkpoint_time"] > t0 + 5  # a mid-stream checkpoint was used
    finally:
        s.close()


def test_survives_reopen_and_schema_is_versioned(history_where: str) -> None:
    path = history_where
    s = HistoryStore(path)
    record_all(s, "n", [*snapshot(base_records(), seq=1), ev("spawn", 2, pid=P(9), label="x")])
    aid = s.audit("ada", "10.0.0.1", "kill", P(2), {"reason": "kill"}, node="n")
    s.close()
    s = HistoryStore(path)
    try:
        assert {e["kind"] for e in s.events(node="n")} == {"snapshot", "spawn"}
        res = s.tree_at("n", time.time() + 1e6)
        assert res is not None and P(9) in {r["pid"] for r in res["procs"]}
        assert s.audits()[0]["id"] == aid
        record_all(s, "n", [ev("exit", 3, pid=P(9), reason="x", reason_kind="other")])
        assert s.flush()
    finally:
        s.close()
    backend = open_backend(path)
    with contextlib.closing(backend.connect(write=True)) as conn:  # autocommit
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        if backend.name == "sqlite":
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer observer"):
        HistoryStore(path)


def test_audit_row_is_committed_before_the_action_and_updated_after(store: HistoryStore) -> None:
    aid = store.audit("ada", "10.0.0.1", "kill", P(2), {"reason": "kill"}, node="n1")
    # visible to another connection right away: written before anything is done
    with contextlib.closing(store.db.backend.connect(write=False)) as conn:
        sql = store.db.dialect("SELECT who, from_addr, action, target, args, result FROM audit WHERE id = ?")
        row = store.db.backend.row_dict(conn.execute(sql, (aid,)).fetchone())
    assert tuple(row.values()) == ("ada", "10.0.0.1", "kill", P(2), '{"reason": "kill"}', None)
    store.audit_result(aid, {"pid": P(2)}, ok=True)
    assert store.flush()
    a = store.audits(node="n1")[0]
    assert a["result"] == {"pid": P(2)} and a["ok"] == 1 and a["done_time"] >= a["time"]


def test_many_events_are_batched(store: HistoryStore) -> None:
    record_all(store, "n", snapshot([rec(P(1))], seq=0))
    for i in range(1, 5001):
        store.record("n", ev("spawn", i, pid=P(1000 + i), label="w"))
    assert store.flush(30)
    st = store.stats()
    assert st["written"] >= 5001 and st["pending"] == 0
    tl = store.timeline("n", buckets=10)
    assert sum(b["events"] for b in tl["buckets"]) == 5001
    assert tl["start"] is not None and tl["end"] >= tl["start"] and tl["checkpoints"]
    res = store.tree_at("n", tl["end"])
    assert res is not None and len(res["procs"]) == 5001


# -- failures ----------------------------------------------------------------------------------------------


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "observer.db" and r.levelno >= logging.ERROR]


def test_size_cap_reached_keeps_running_and_counts_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A portable stand-in for a full disk: SQLite's page cap gives the same SQLITE_FULL."""
    caplog.set_level(logging.INFO, logger="observer.db")
    s = HistoryStore(str(tmp_path / "h.db"), max_bytes=96 * 1024, max_pending=200, retry_interval=0.05)
    try:
        record_all(s, "n", snapshot([rec(P(1))], seq=0))
        for i in range(1, 1001):
            s.record("n", ev("exit", i, pid=P(i), reason="x" * 500, reason_kind="exception", traceback="t" * 500))
        assert s.flush() is False
        st = s.stats()
        assert not st["healthy"] and "full" in st["error"]
        assert st["dropped"] > 0 and st["pending"] <= 201
        assert len(_errors(caplog)) == 1  # logged once, not per batch
        for i in range(1001, 1101):
            s.record("n", ev("spawn", i, pid=P(i), label="w"))
        s.flush()
        assert len(_errors(caplog)) == 1
        # (an audit row may still fit in a partly used page here; see the read-only test)
    finally:
        s.close()


def _mount_tmpfs(mnt: Path, size: str) -> bool:
    mnt.mkdir()
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "2m"):
        pytest.skip("needs root and tmpfs mounts")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10)


def test_full_disk_is_logged_once_kept_in_memory_then_recovered(tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="observer.db")
    s = HistoryStore(str(tmpfs / "h.db"), retry_interval=0.05, checkpoint_events=1_000_000)
    filler = tmpfs / "filler"
    try:
        record_all(s, "n", snapshot([rec(P(1))], seq=0))
        assert s.flush()
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        for i in range(1, 301):
            s.record("n", ev("exit", i, pid=P(i), reason="r" * 100, reason_kind="exception", traceback="t" * 100))
        assert s.flush() is False
        st = s.stats()
        assert not st["healthy"] and st["pending"] >= 300 and st["dropped"] == 0
        assert len(_errors(caplog)) == 1
        assert "cannot be written" in _errors(caplog)[0].getMessage()
        filler.unlink()  # space again: the backlog goes in
        wait_for(lambda: s.flush() and s.stats()["healthy"], what="the store to recover")
        assert len(s.events(node="n", kinds=["exit"], limit=1000)) == 300
        assert len(s.crashes(limit=1000)) == 300
    finally:
        s.close()


def test_read_only_file_system_is_logged_once_then_recovered(tmpfs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The history file on a read-only file system (remounted ro: root ignores file modes)."""
    caplog.set_level(logging.INFO, logger="observer.db")
    path = str(tmpfs / "h.db")
    s = HistoryStore(path)
    record_all(s, "n", snapshot([rec(P(1))], seq=0))
    assert s.flush()
    s.close()  # a file system with files open for writing cannot be remounted ro
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True, timeout=10)
    s = HistoryStore(path, retry_interval=0.05)
    try:
        try:
            for i in range(1, 51):
                s.record("n", ev("spawn", i, pid=P(100 + i), label="w"))
            assert s.flush() is False
            s.flush()
            assert len(_errors(caplog)) == 1
            assert not s.stats()["healthy"] and s.stats()["pending"] >= 50
            with pytest.raises(AuditError):
                s.audit("ada", "1.2.3.4", "kill", P(1))
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True, timeout=10)
        wait_for(lambda: s.flush() and s.stats()["healthy"], what="the store to recover")
        assert len(s.events(node="n", kinds=["spawn"], limit=100)) == 50
    finally:
        s.close()


def test_timeline_ignores_events_written_after_its_range_was_read(store: HistoryStore) -> None:
    """A live node writes while the timeline is read: a row older than the
    range's start (a late batch) or newer than its end must not break it."""
    record_all(store, "n", snapshot([rec(P(1))], seq=0))
    for i in range(1, 21):
        store.record("n", ev("spawn", i, pid=P(100 + i), label="w", time=5000.0 + i))
    assert store.flush()
    real_query = store.db.execute
    injected = False

    def query_with_a_write_in_between(sql: str, params: Any = ()) -> Any:
        nonlocal injected
        rows = real_query(sql, params)
        if not injected and sql.startswith("SELECT MIN(time)"):
            injected = True
            store.record("n", ev("exit", 21, pid=P(101), reason="late", time=1.0))  # far before start
            store.record("n", ev("exit", 22, pid=P(102), reason="new", time=4e9))  # after end
            assert store.flush()
        return rows

    store.db.execute = query_with_a_write_in_between  # type: ignore[method-assign]
    tl = store.timeline("n", buckets=10)
    assert injected and len(tl["buckets"]) == 10
    assert sum(b["exits"] for b in tl["buckets"]) == 0  # the two late rows are outside the range read


def test_the_writers_graph_of_a_big_node_is_frozen_out_of_the_collectors_sight(store: HistoryStore) -> None:
    # the history's own graph of a node just attached is long-lived: full collections
    # (pauses on whichever thread allocates) must not walk it again and again
    recs = [sup(P(1))] + [rec(P(i), supervisor=P(1), child_id=f"c{i}") for i in range(2, FREEZE_AT + 2)]
    before = gc.get_freeze_count()
    try:
        record_all(store, "big", snapshot(linked(recs), seq=1))
        assert store.flush()
        assert gc.get_freeze_count() >= before + FREEZE_AT
        assert store.tree_at("big", time.time() + 1) is not None
    finally:
        gc.unfreeze()  # the test process's heap back in the collector's sight

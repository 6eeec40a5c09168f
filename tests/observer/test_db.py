"""The database layer: migrations from a file the first release wrote, a newer file
refused, one writer thread, read-only readers, a private file, and the backend seam.
Real SQLite files throughout; the tests taking ``history_where`` run on a real
PostgreSQL database too (see tests/conftest.py)."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from observer.chaos import ChaosHistory
from observer.db import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Connection,
    Database,
    Migration,
    SchemaTooNewError,
    SQLiteBackend,
    StoreError,
    open_backend,
)
from observer.store import HistoryStore
from tests.observer import ev, rec, snapshot, wait_for


def P(i: int) -> str:
    return f"<0.{i}.0>"


V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    seq INTEGER,
    time REAL NOT NULL,
    recv_time REAL NOT NULL,
    kind TEXT NOT NULL,
    pid TEXT,
    name TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_node_time ON events (node, time);
CREATE INDEX IF NOT EXISTS events_node_id ON events (node, id);
CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time);
CREATE TABLE IF NOT EXISTS crashes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    seq INTEGER,
    time REAL NOT NULL,
    pid TEXT,
    name TEXT,
    label TEXT,
    supervisor TEXT,
    exception TEXT,
    reason TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS crashes_node_time ON crashes (node, time);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    who TEXT,
    from_addr TEXT,
    node TEXT,
    action TEXT NOT NULL,
    target TEXT,
    args TEXT,
    result TEXT,
    ok INTEGER,
    done_time REAL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    time REAL NOT NULL,
    seq INTEGER,
    event_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_node_time ON checkpoints (node, time);

CREATE TABLE IF NOT EXISTS crash_groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    signature TEXT NOT NULL,
    exception TEXT,
    frame TEXT,
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    UNIQUE (node, signature)
);
CREATE TABLE IF NOT EXISTS crash_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    signature TEXT NOT NULL,
    seq INTEGER,
    time REAL NOT NULL,
    pid TEXT,
    name TEXT,
    supervisor TEXT,
    child_id TEXT,
    exception TEXT,
    reason TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS crash_reports_sig ON crash_reports (node, signature, time);
CREATE INDEX IF NOT EXISTS crash_reports_pid ON crash_reports (node, pid);
CREATE INDEX IF NOT EXISTS crash_reports_slot ON crash_reports (node, supervisor, child_id);
CREATE TABLE IF NOT EXISTS chaos_experiments (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    title TEXT,
    started REAL NOT NULL,
    ended REAL,
    status TEXT NOT NULL,
    held INTEGER,
    kills INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chaos_experiments_started ON chaos_experiments (started);
"""
"""The schema as the first release (schema_version 1) created it: the history
store's tables, observer/crashes.py's, and ChaosHistory's (made on first use)."""

REPORT = {
    "pid": P(3),
    "name": "beta",
    "label": "Beta",
    "supervisor": P(1),
    "child_id": "b",
    "exception": "ZeroDivisionError",
    "reason": "ZeroDivisionError('division by zero')",
    "traceback": "Traceback...\nZeroDivisionError",
    "exceptions": [{"type": "ZeroDivisionError", "frames": [{"file": "app.py", "function": "ratio", "own": True}]}],
    "ancestry": [{"pid": P(1)}, {"pid": P(3)}],
}
KILLED = {"pid": P(7), "label": "Gamma", "supervisor": P(1), "child_id": "c", "reason": "'killed'"}


def make_v1_file(path: Path) -> None:
    """A history file as the first release left it, with a crash in both crash
    tables, a crash only in ``crashes`` (reports off), a report only in
    ``crash_reports`` (a kill), a checkpoint, an audit row and a chaos journal."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        procs = [{"pid": P(1), "name": "top", "label": "Supervisor", "links": [P(3)]}, {"pid": P(3), "links": [P(1)]}]
        conn.execute(
            "INSERT INTO events (node, seq, time, recv_time, kind, pid, name, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("n", 5, 1000.0, 1000.0, "snapshot", None, None, json.dumps({"t": "snapshot", "seq": 5, "count": 2})),
        )
        conn.execute(
            "INSERT INTO checkpoints (node, time, seq, event_id, count, json) VALUES (?, ?, ?, ?, ?, ?)",
            ("n", 1000.0, 5, 1, 2, json.dumps({"procs": procs, "names": {"top": P(1)}})),
        )
        exit_ev = {"t": "ev", "ev": "exit", "seq": 8, "pid": P(3), "reason_kind": "exception", "report": True}
        conn.execute(
            "INSERT INTO events (node, seq, time, recv_time, kind, pid, name, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("n", 8, 1010.0, 1010.0, "exit", P(3), "beta", json.dumps(exit_ev)),
        )
        crash = "INSERT INTO crashes (node, seq, time, pid, name, label, supervisor, exception, reason, traceback) "
        crash += "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        conn.execute(crash, ("n", 8, 1010.0, P(3), "beta", "Beta", P(1), "ZeroDivisionError", "zde", "tb one"))
        conn.execute(crash, ("n", 12, 1020.0, P(9), None, "Delta", P(1), "KeyError", "KeyError('k')", "tb two"))
        reports = "INSERT INTO crash_reports (node, signature, seq, time, pid, name, supervisor, child_id, "
        reports += "exception, reason, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        sig = "ZeroDivisionError at app.py:ratio"
        conn.execute(
            reports, ("n", sig, 8, 1010.0, P(3), "beta", P(1), "b", "ZeroDivisionError", "zde", json.dumps(REPORT))
        )
        conn.execute(
            reports,
            ("n", "exit 'killed' of Gamma", 10, 1015.0, P(7), "Gamma", P(1), "c", None, "'killed'", json.dumps(KILLED)),
        )
        groups = "INSERT INTO crash_groups (node, signature, exception, frame, count, first_seen, last_seen) "
        groups += "VALUES (?, ?, ?, ?, 1, ?, ?)"
        conn.execute(groups, ("n", sig, "ZeroDivisionError", "app.py:ratio", 1010.0, 1010.0))
        conn.execute(groups, ("n", "exit 'killed' of Gamma", None, None, 1015.0, 1015.0))
        conn.execute(
            "INSERT INTO audit (time, who, from_addr, node, action, target, args) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (1005.0, "ada", "10.0.0.1", "n", "kill", P(7), "{}"),
        )
        journal = {"id": "x1", "node": "n", "title": "t", "started": 1001.0, "status": "completed"}
        conn.execute(
            "INSERT INTO chaos_experiments (id, node, title, started, ended, status, held, kills, json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("x1", "n", "t", 1001.0, 1002.0, "completed", 1, 1, json.dumps(journal)),
        )
        conn.commit()


def tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_file_from_the_first_release_is_upgraded_and_its_crashes_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_v1_file(path)
    s = HistoryStore(str(path))
    try:
        assert "crash_reports" not in tables(path)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        # three crashes: the one in both tables once, the report-less one, the report-only kill
        rows = {c["pid"]: c for c in s.crashes(limit=100)}
        assert set(rows) == {P(3), P(7), P(9)}
        assert rows[P(3)]["has_report"] and rows[P(3)]["traceback"] == "tb one" and rows[P(3)]["child_id"] == "b"
        assert rows[P(7)]["has_report"] and rows[P(7)]["exception"] is None
        assert not rows[P(9)]["has_report"] and rows[P(9)]["signature"] == "KeyError at ?"
        groups = {g["signature"]: g for g in s.crash_groups(node="n")}
        assert groups["ZeroDivisionError at app.py:ratio"]["count"] == 1
        assert groups["ZeroDivisionError at app.py:ratio"]["latest"]["pid"] == P(3)
        assert set(groups) == {"ZeroDivisionError at app.py:ratio", "exit 'killed' of Gamma", "KeyError at ?"}
        one = s.crash(rows[P(3)]["id"])
        assert one is not None and one["report"] == REPORT and one["tree_url"] == f"/nodes/n/tree?path={P(1)},{P(3)}"
        plain = s.crash(rows[P(9)]["id"])
        assert plain is not None and plain["report"]["traceback"] == "tb two" and not plain["has_report"]
        assert [c["pid"] for c in s.process_crashes("n", P(11), P(1), "b")] == [P(3)]
        assert s.find_crash("n", P(7)) == rows[P(7)]["id"]
        # the rest is read as before, and written on top
        assert s.tree_at("n", 1001.0) is not None
        assert [a["action"] for a in s.audits()] == ["kill"]
        assert [j["id"] for j in ChaosHistory(s.db).list()] == ["x1"]
        s.record("n", ev("exit", 20, pid=P(1), reason="boom", reason_kind="exception", exception="ValueError"))
        assert s.flush()
        assert len(s.crashes(limit=100)) == 4
    finally:
        s.close()


def test_a_file_from_a_newer_observer_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    HistoryStore(str(path)).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
        conn.execute("CREATE TABLE from_the_future (x INTEGER)")
        conn.commit()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    writers = {t for t in threading.enumerate() if t.name == "observer-db-writer"}
    with pytest.raises(SchemaTooNewError, match=r"written by a newer observer \(schema \d+ > \d+"):
        HistoryStore(str(path))
    with pytest.raises(StoreError, match="upgrade the observer"):
        Database(SQLiteBackend(str(path)))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert {t for t in threading.enumerate() if t.name == "observer-db-writer"} <= writers  # none left running


def test_the_history_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = HistoryStore(str(tmp_path / "h.db"))
    finally:
        os.umask(old)
    try:
        s.record("n", ev("spawn", 1, pid=P(1)))
        assert s.flush()
        for name in ("h.db", "h.db-wal", "h.db-shm"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        s.close()


@pytest.fixture
def db(history_where: str) -> Iterator[Database]:
    d = Database(open_backend(history_where), batch_interval=0.02)
    yield d
    d.close()


def test_every_write_runs_on_the_one_writer_thread_in_its_own_transaction(db: Database) -> None:
    seen: set[int] = set()
    results: list[int] = []

    def write(i: int) -> None:
        def fn(conn: Connection) -> int:
            seen.add(threading.get_ident())
            conn.execute(db.dialect("INSERT INTO audit (time, action) VALUES (?, ?)"), (float(i), "w"))
            return i

        results.append(db.execute_write_fn(fn))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(8)) and len(seen) == 1 and threading.get_ident() not in seen

    def half_then_fail(conn: Connection) -> None:
        conn.execute(db.dialect("INSERT INTO audit (time, action) VALUES (?, ?)"), (99.0, "rolled back"))
        raise ValueError("no")

    with pytest.raises(ValueError):
        db.execute_write_fn(half_then_fail)
    assert db.execute("SELECT COUNT(*) AS n FROM audit") == [{"n": 8}]
    assert db.stats()["healthy"]  # a failing function is not a failing database


def test_readers_cannot_write_and_are_reused(db: Database) -> None:
    with pytest.raises(StoreError, match=r"readonly|read-only"):
        db.execute("INSERT INTO audit (time, action) VALUES (1, 'x')")
    for _ in range(20):
        assert db.execute("SELECT COUNT(*) AS n FROM events") == [{"n": 0}]
    assert len(db._pool) == 1  # one thread, one connection, taken and given back
    db.write_nowait("INSERT INTO audit (time, action) VALUES (?, ?)", (1.0, "later"))
    assert db.execute("SELECT action FROM audit") in ([], [{"action": "later"}])
    assert db.flush()
    assert db.execute("SELECT action FROM audit") == [{"action": "later"}]


class NumberedSQLite(SQLiteBackend):
    """SQLite spoken through a dialect of its own: every ``?`` becomes ``?NNN``, and
    a statement with a bare ``?`` outside the migrations is refused. A real engine
    with a different placeholder style: what a second backend has to plug into."""

    name = "sqlite-numbered"

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.translated = 0
        self.migrating = False

    def sql(self, text: str) -> str:
        self.translated += 1
        n = 0

        def number(_m: re.Match[str]) -> str:
            nonlocal n
            n += 1
            return f"?{n}"

        return re.sub(r"\?(?!\d)", number, text)

    def connect(self, *, write: bool) -> Connection:
        return _Strict(super().connect(write=write), self)

    def migrations(self) -> Sequence[Migration]:
        def wrap(m: Migration) -> Migration:
            def apply(conn: Connection) -> None:
                self.migrating = True
                try:
                    m.apply(conn)
                finally:
                    self.migrating = False

            return Migration(m.number, m.name, apply)

        return [wrap(m) for m in MIGRATIONS]

    def row_dict(self, row: Any) -> dict[str, Any]:
        return dict(row)


class _Strict:
    def __init__(self, conn: Any, backend: NumberedSQLite) -> None:
        self._conn = conn
        self._backend = backend

    def _check(self, sql: str) -> None:
        if not self._backend.migrating and re.search(r"\?(?!\d)", sql):
            raise AssertionError(f"SQL that bypassed the backend's dialect: {sql}")

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        self._check(sql)
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any, /) -> Any:
        self._check(sql)
        return self._conn.executemany(sql, rows)

    def close(self) -> None:
        self._conn.close()


def test_another_backend_plugs_in_without_touching_the_callers(tmp_path: Path) -> None:
    backend = NumberedSQLite(str(tmp_path / "b.db"))
    s = HistoryStore("b.db", db=Database(backend, batch_interval=0.02))
    try:
        s.record("n", snapshot([rec(P(1), name="top")], seq=1)[0])
        for m in snapshot([rec(P(1), name="top")], seq=1)[1:]:
            s.record("n", m)
        s.record("n", ev("spawn", 2, pid=P(2), label="w", time=time.time()))
        report = {**REPORT, "pid": P(2)}
        s.record(
            "n",
            ev(
                "exit", 3, pid=P(2), reason="zde", reason_kind="exception", exception="ZeroDivisionError", report=report
            ),
        )
        aid = s.audit("ada", "1.2.3.4", "kill", P(2), {"reason": "kill"}, node="n")
        s.audit_result(aid, {"ok": True})
        ChaosHistory(s.db).save({"id": "e", "node": "n", "started": 1.0, "status": "running"})
        ChaosHistory(s.db).save({"id": "e", "node": "n", "started": 1.0, "status": "completed"})
        assert s.flush()
        assert {e["kind"] for e in s.events(node="n", q="zde")} == {"exit"}
        assert s.tree_at("n", time.time() + 1) is not None
        tl = s.timeline("n", buckets=5)
        assert sum(b["crashes"] for b in tl["buckets"]) == 1
        [g] = s.crash_groups(node="n")
        crash = s.crash(g["latest"]["id"])
        assert crash is not None and crash["report"]["pid"] == P(2)
        assert s.process_crashes("n", P(2)) and s.find_crash("n", P(2)) == crash["id"]
        assert s.audits()[0]["result"] == {"ok": True}
        assert [j["status"] for j in ChaosHistory(s.db).list()] == ["completed"]
        assert backend.translated > 10
    finally:
        s.close()


def test_a_writer_that_falls_behind_drops_new_items_instead_of_blocking(history_where: str) -> None:
    db = Database(open_backend(history_where), max_queued=100)
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(10)

    try:
        db.call_soon(hold)
        assert busy.wait(10)  # the writer is busy...
        t0 = time.monotonic()
        for i in range(1000):
            db.write_nowait("INSERT INTO audit (time, action) VALUES (?, ?)", (float(i), "q"))
        assert time.monotonic() - t0 < 1.0  # ...and nobody waited for it
        assert db.stats()["dropped"] == 900
        release.set()
        assert db.flush()
        assert db.execute("SELECT COUNT(*) AS n FROM audit") == [{"n": 100}]
    finally:
        release.set()
        db.close()


def test_a_write_function_may_write_through_the_layer_again(db: Database) -> None:
    def outer(conn: Connection) -> int:
        conn.execute(db.dialect("INSERT INTO audit (time, action) VALUES (?, ?)"), (1.0, "outer"))
        return db.execute_write_fn(lambda c: c.execute("SELECT COUNT(*) FROM audit").fetchone()[0])

    assert db.execute_write_fn(outer) == 1  # the inner one ran in the outer's transaction


def test_commit_listeners_hear_audit_rows_results_and_crashes_after_they_are_committed(history_where: str) -> None:
    s = HistoryStore(history_where, batch_interval=0.01)
    seen: list[tuple[str, dict[str, Any], int]] = []

    def listener(kind: str, row: dict[str, Any]) -> None:
        with contextlib.closing(s.db.backend.connect(write=False)) as conn:  # committed: another connection sees it
            table = "crashes" if kind == "crash" else "audit"
            seen.append((kind, row, conn.execute(f"SELECT COUNT(*) AS n FROM {table}").fetchone()["n"]))

    s.on_commit(lambda kind, row: 1 / 0)  # a broken one is logged and the others still hear
    s.on_commit(listener)
    try:
        aid = s.audit("ada", "1.2.3.4", "kill", P(2), {"reason": "kill"}, node="n")
        s.audit_result(aid, {"pid": P(2)})
        s.record("n", ev("exit", 1, pid=P(2), reason="boom", reason_kind="exception", exception="ValueError"))
        assert s.flush()
    finally:
        s.close()
    assert [(k, n) for k, _r, n in seen] == [("audit", 1), ("audit_result", 1), ("crash", 1)]
    assert seen[0][1]["id"] == aid and seen[0][1]["args"] == {"reason": "kill"} and seen[0][1]["ok"] is None
    assert seen[1][1] | {"done_time": 0} == {"id": aid, "result": {"pid": P(2)}, "ok": 1, "done_time": 0}
    crash = seen[2][1]
    assert crash["pid"] == P(2) and crash["signature"] == "ValueError at ?" and "report" not in crash


def test_two_observers_opening_one_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    make_v1_file(path)
    opened: list[HistoryStore] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            opened.append(HistoryStore(str(path)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(opened) == 2
        # on a loaded machine the second opener can meet SQLITE_BUSY past its busy timeout: it then keeps
        # running and retries (every 5 s), as the layer promises; the file must still be migrated once
        wait_for(lambda: all(s.stats()["healthy"] for s in opened), timeout=20, what="both stores healthy")
        assert len(opened[0].crashes(limit=100)) == len(opened[1].crashes(limit=100)) == 3
    finally:
        for s in opened:
            s.close()


def test_the_data_layer_imports_no_route_module() -> None:
    """observer/db/ and the history store know nothing of Flask or the views."""
    root = Path(__file__).resolve().parents[2] / "observer"
    for path in [*sorted((root / "db").glob("*.py")), root / "store.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                assert not re.match(r"(flask|flask_socketio|observer\.(views|app|live)|\.+(views|app|live)\b)", name), (
                    f"{path.name} imports {name}"
                )

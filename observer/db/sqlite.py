"""The SQLite backend (the default): one file, WAL mode, created readable by its owner only.

Migrations (:data:`MIGRATIONS`, numbered; the version is kept in the table
``schema_version``):

1. the history as the first release wrote it: events, crashes, the audit
   log, checkpoints, and crash reports in ``crash_reports``/``crash_groups``;
2. ``chaos_experiments`` (the first release created it on first use);
3. crashes stored once: ``crashes`` gains the report and its signature,
   ``crash_reports`` rows are carried over into it (merged with the row of
   the same exit where there is one) and dropped, ``crash_groups`` is rebuilt
   from ``crashes``;
4. message traces: ``traces`` (one row per trace: its spec, counts, end) and
   ``trace_messages`` (its arrows), see :mod:`observer.db.traces`;
5. ``login_sessions``: the server-side login sessions (:mod:`observer.db.sessions`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from .backend import Connection, Migration
from .crashes import signature

__all__ = ["MIGRATIONS", "SQLiteBackend"]


def _script(conn: Connection, sql: str) -> None:
    for stmt in sql.split(";"):
        if stmt.strip():
            conn.execute(stmt)


_V1 = """
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
CREATE INDEX IF NOT EXISTS crash_reports_slot ON crash_reports (node, supervisor, child_id)
"""

_V2 = """
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
CREATE INDEX IF NOT EXISTS chaos_experiments_started ON chaos_experiments (started)
"""


_V4 = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    end_reason TEXT,
    who TEXT,
    spec TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    dropped INTEGER NOT NULL DEFAULT 0,
    stored INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS traces_node_started ON traces (node, started);
CREATE TABLE IF NOT EXISTS trace_messages (
    trace TEXT NOT NULL,
    n INTEGER NOT NULL,
    time REAL NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trace_messages_trace ON trace_messages (trace, n)
"""


def _v1(conn: Connection) -> None:
    _script(conn, _V1)


def _v2(conn: Connection) -> None:
    _script(conn, _V2)


def _v4(conn: Connection) -> None:
    _script(conn, _V4)


def _v3(conn: Connection) -> None:
    for col in ("child_id", "reason_kind", "signature", "frame", "report"):
        conn.execute(f"ALTER TABLE crashes ADD COLUMN {col} TEXT")
    conn.execute("UPDATE crashes SET reason_kind = 'exception'")  # the first release kept exceptions only
    reports = conn.execute(
        "SELECT node, seq, time, pid, name, supervisor, child_id, exception, reason, json "
        "FROM crash_reports ORDER BY id"
    ).fetchall()
    for node, seq, t, pid, name, supervisor, child_id, exc, reason, body in reports:
        try:
            rep: dict[str, Any] = json.loads(body)
        except ValueError:
            rep = {}
        sig, _exc, frame = signature(rep if rep else {"exception": exc, "reason": reason, "name": name})
        same = conn.execute(
            "SELECT id FROM crashes WHERE node = ? AND pid IS ? AND seq IS ? AND report IS NULL ORDER BY id LIMIT 1",
            (node, pid, seq),
        ).fetchone()
        if same is not None:
            conn.execute(
                "UPDATE crashes SET child_id = ?, signature = ?, frame = ?, report = ?, "
                "supervisor = COALESCE(supervisor, ?) WHERE id = ?",
                (child_id, sig, frame, body, supervisor, same[0]),
            )
        else:
            conn.execute(
                "INSERT INTO crashes (node, seq, time, pid, name, label, supervisor, child_id, reason_kind, "
                "exception, reason, traceback, signature, frame, report) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    node,
                    seq,
                    t,
                    pid,
                    rep.get("name") or name,
                    rep.get("label"),
                    supervisor,
                    child_id,
                    "exception" if exc else "other",
                    exc,
                    reason,
                    rep.get("traceback"),
                    sig,
                    frame,
                    body,
                ),
            )
    for cid, exc, reason, name, label in conn.execute(
        "SELECT id, exception, reason, name, label FROM crashes WHERE signature IS NULL"
    ).fetchall():
        sig, _exc, frame = signature({"exception": exc, "reason": reason, "name": name, "label": label})
        conn.execute("UPDATE crashes SET signature = ?, frame = ? WHERE id = ?", (sig, frame, cid))
    conn.execute("DELETE FROM crash_groups")
    conn.execute(
        "INSERT INTO crash_groups (node, signature, exception, frame, count, first_seen, last_seen) "
        "SELECT node, signature, MAX(exception), MAX(frame), COUNT(*), MIN(time), MAX(time) FROM crashes "
        "GROUP BY node, signature"
    )
    conn.execute("DROP TABLE crash_reports")
    _script(
        conn,
        """
        CREATE INDEX crashes_sig ON crashes (node, signature, time);
        CREATE INDEX crashes_pid ON crashes (node, pid);
        CREATE INDEX crashes_slot ON crashes (node, supervisor, child_id)
        """,
    )


def _v5(conn: Connection) -> None:
    _script(
        conn,
        """
        CREATE TABLE login_sessions (
            id TEXT PRIMARY KEY, token TEXT NOT NULL, who TEXT NOT NULL, role TEXT NOT NULL,
            created REAL NOT NULL, last_seen REAL NOT NULL, expires REAL NOT NULL,
            revoked REAL, revoked_by TEXT, from_addr TEXT, agent TEXT
        );
        CREATE INDEX login_sessions_token ON login_sessions (token)
        """,
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "events, crashes, audit, checkpoints, crash reports", _v1),
    Migration(2, "chaos experiments", _v2),
    Migration(3, "crashes stored once: crash_reports merged into crashes", _v3),
    Migration(4, "message traces", _v4),
    Migration(5, "server-side login sessions", _v5),
)
"""The SQLite schema, from an empty file."""


def _create_private(path: str) -> None:
    """Create ``path`` readable and writable by its owner only (SQLite gives its
    ``-wal`` and ``-shm`` files the database file's mode)."""
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SQLiteBackend:
    """A history in the SQLite file ``path``; ``max_bytes`` caps its size (past
    it writes fail as on a full disk)."""

    name = "sqlite"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    migration_begin = "BEGIN IMMEDIATE"

    def __init__(self, path: str, *, max_bytes: int | None = None, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.max_bytes = max_bytes
        self.timeout = timeout

    def describe(self) -> str:
        return self.path

    def connect(self, *, write: bool) -> Connection:
        if not write:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA query_only=1")
            except BaseException:
                conn.close()
                raise
            conn.row_factory = sqlite3.Row
            return conn
        _create_private(self.path)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if self.max_bytes:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={max(8, int(self.max_bytes) // int(page))}")
        except BaseException:
            conn.close()
            raise
        return conn

    def row_dict(self, row: Any) -> dict[str, Any]:
        return dict(row)

    def sql(self, text: str) -> str:
        return text

    def floor_int(self, expr: str) -> str:
        return f"CAST({expr} AS INTEGER)"

    def is_missing_table(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)

    def migrations(self) -> Sequence[Migration]:
        return MIGRATIONS

    def claim(self, conn: Connection, key: str) -> bool:
        return True  # a file for one observer: it records everything

    def release(self, conn: Connection, key: str) -> None:
        return None

"""Crash reports: stored in SQLite, grouped by signature, served as pages and JSON twins.

Storage
    The history store's writer (:mod:`observer.store`) calls :func:`rows_for`
    for every ``exit`` event that carries a ``report`` and writes the rows in
    its own transactions, into this module's tables (:data:`SCHEMA`): one row
    per report in ``crash_reports`` and one row per (node, signature) in
    ``crash_groups``, upserted with a count and first/last seen, so that a
    crash repeating every minute reads as one problem, not a thousand.

Signature
    The exception's type and the innermost frame of the process's own code
    (``file:function``; the line is left out so an edit elsewhere in the file
    does not split a group). A report with no exception (killed by a signal,
    a custom exit reason) is grouped by its reason and the process's label.

Reading
    :func:`group_list`, :func:`report`, :func:`of_process` and
    :func:`latest_id`, served by :mod:`observer.views.crashes`.

Threading rules
    Request handlers open their own short read-only SQLite connection; the
    writer thread only calls :func:`rows_for` (pure).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

__all__ = ["SCHEMA", "SQL", "group_list", "latest_id", "of_process", "report", "rows_for", "signature"]

SCHEMA = """
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
"""
"""This module's tables (created by the history store with its own)."""

SQL = {
    "crash_group": "INSERT INTO crash_groups (node, signature, exception, frame, count, first_seen, last_seen) "
    "VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (node, signature) DO UPDATE SET count = count + 1, "
    "first_seen = MIN(first_seen, excluded.first_seen), last_seen = MAX(last_seen, excluded.last_seen)",
    "crash_report": "INSERT INTO crash_reports (node, signature, seq, time, pid, name, supervisor, child_id, "
    "exception, reason, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}
"""Statements the history store's writer runs for :func:`rows_for`'s rows."""


def signature(report: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """``(signature, exception, frame)`` of a wire crash report."""
    exc = report.get("exception")
    frame = None
    excs = report.get("exceptions") or []
    if excs and isinstance(excs[0], dict):
        own = [f for f in excs[0].get("frames") or [] if isinstance(f, dict) and f.get("own")]
        if own:
            frame = f"{own[-1].get('file')}:{own[-1].get('function')}"
    if exc:
        return f"{exc} at {frame or '?'}", str(exc), frame
    who = report.get("label") or report.get("name") or "?"
    return f"exit {str(report.get('reason'))[:80]} of {who}", None, None


def rows_for(node: str, seq: Any, when: float, msg: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows to write for one ``exit`` event (none without a report)."""
    rep = msg.get("report")
    if not isinstance(rep, dict):
        return []
    sig, exc, frame = signature(rep)
    t = float(rep.get("time") or when)
    body = json.dumps(rep, default=str, separators=(",", ":"))
    return [
        ("crash_group", (node, sig, exc, frame, t, t)),
        (
            "crash_report",
            (
                node,
                sig,
                seq if isinstance(seq, int) else None,
                t,
                rep.get("pid"),
                rep.get("name") or rep.get("label"),
                rep.get("supervisor"),
                rep.get("child_id"),
                exc,
                rep.get("reason"),
                body,
            ),
        ),
    ]


# -- reading ---------------------------------------------------------------------------------


def _query(path: str, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
    from .store import StoreError

    try:
        conn = sqlite3.connect(path, timeout=5.0)
        conn.execute("PRAGMA query_only=1")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, tuple(params)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise StoreError(f"cannot read {path}: {exc}") from exc
    finally:
        conn.close()


def _like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def group_list(path: str, *, node: str | None = None, q: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Crash groups, the latest first, each with its latest report's id, pid and name."""
    where: list[str] = []
    params: list[Any] = []
    if node:
        where.append("g.node = ?")
        params.append(node)
    if q:
        where.append("g.signature LIKE ? ESCAPE '\\'")
        params.append(f"%{_like(q)}%")
    sql = (
        "SELECT g.*, (SELECT r.id FROM crash_reports r WHERE r.node = g.node AND r.signature = g.signature "
        "ORDER BY r.time DESC, r.id DESC LIMIT 1) AS latest_id FROM crash_groups g"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY g.last_seen DESC, g.id DESC LIMIT ?"
    params.append(int(limit))
    out = []
    for r in _query(path, sql, params):
        d = dict(r)
        latest = _query(path, "SELECT id, pid, name, time FROM crash_reports WHERE id = ?", (d["latest_id"],))
        d["latest"] = dict(latest[0]) if latest else None
        out.append(d)
    return out


def report(path: str, report_id: int) -> dict[str, Any] | None:
    """One stored report with its group (and the ids of its group's other reports)."""
    rows = _query(path, "SELECT * FROM crash_reports WHERE id = ?", (report_id,))
    if not rows:
        return None
    row = dict(rows[0])
    body = json.loads(row.pop("json"))
    grp = _query(path, "SELECT * FROM crash_groups WHERE node = ? AND signature = ?", (row["node"], row["signature"]))
    others = _query(
        path,
        "SELECT id, pid, time FROM crash_reports WHERE node = ? AND signature = ? ORDER BY time DESC, id DESC LIMIT 50",
        (row["node"], row["signature"]),
    )
    path_pids = [a.get("pid") for a in body.get("ancestry") or [] if isinstance(a, dict)]
    return {
        **row,
        "group": dict(grp[0]) if grp else None,
        "recent": [dict(o) for o in others],
        "report": body,
        "tree_url": f"/nodes/{row['node']}/tree?path=" + ",".join(str(p) for p in path_pids if p),
    }


def of_process(path: str, node: str, pid: str, supervisor: str | None, child_id: str | None) -> list[dict[str, Any]]:
    """Reports of ``pid`` and of the earlier incarnations of its child slot, latest first."""
    sql = "SELECT id, pid, time, exception, reason, signature FROM crash_reports WHERE node = ? AND (pid = ?"
    params: list[Any] = [node, pid]
    if supervisor and child_id:
        sql += " OR (supervisor = ? AND child_id = ?)"
        params += [supervisor, child_id]
    sql += ") ORDER BY time DESC, id DESC LIMIT 20"
    return [dict(r) for r in _query(path, sql, params)]


def latest_id(path: str, node: str, pid: str, t: float | None = None) -> int | None:
    """The id of ``pid``'s latest report on ``node`` (at or before ``t`` + 1 s), or None."""
    sql = "SELECT id FROM crash_reports WHERE node = ? AND pid = ?"
    params: list[Any] = [node, pid]
    if t is not None:
        sql += " AND time <= ?"
        params.append(t + 1.0)
    rows = _query(path, sql + " ORDER BY time DESC, id DESC LIMIT 1", params)
    return int(rows[0]["id"]) if rows else None

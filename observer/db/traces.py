"""Message traces in the history database (tables ``traces`` and ``trace_messages``,
migration 4). Bounded by the caller: :func:`prune` keeps the newest traces, and
the trace service stores at most so many arrows per trace.

Threading rules: any thread. The writes never block (write-behind, committed
with the writer's next batch); the reads use a read connection.
"""

from __future__ import annotations

import json
from typing import Any

from .database import Database

__all__ = ["add_messages", "begin", "end", "get", "list_traces", "prune"]

_NEW_SQL = (  # portable (SQLite and PostgreSQL): a trace id started again starts afresh, as a replace would
    "INSERT INTO traces (id, node, started, who, spec) VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "node = excluded.node, started = excluded.started, who = excluded.who, spec = excluded.spec, "
    "ended = NULL, end_reason = NULL, count = 0, dropped = 0, stored = 0"
)
_MSG_SQL = "INSERT INTO trace_messages (trace, n, time, json) VALUES (?, ?, ?, ?)"
_END_SQL = "UPDATE traces SET count = ?, dropped = ?, stored = ?, ended = ?, end_reason = ? WHERE id = ?"
_PRUNE_MSGS_SQL = "DELETE FROM trace_messages WHERE trace NOT IN (SELECT id FROM traces ORDER BY started DESC LIMIT ?)"
_PRUNE_SQL = "DELETE FROM traces WHERE id NOT IN (SELECT id FROM traces ORDER BY started DESC LIMIT ?)"


def begin(db: Database, tid: str, node: str, started: float, who: str, spec: dict[str, Any]) -> None:
    """A trace started."""
    db.write_nowait(_NEW_SQL, (tid, node, started, who, json.dumps(spec, default=str)))


def add_messages(db: Database, tid: str, msgs: list[dict[str, Any]]) -> None:
    """Some of its arrows (as the agent sent them)."""
    for m in msgs:
        body = json.dumps(m, default=str, separators=(",", ":"))
        db.write_nowait(_MSG_SQL, (tid, int(m.get("n") or 0), float(m.get("time") or 0.0), body))


def end(db: Database, tid: str, *, count: int, dropped: int, stored: int, ended: float, reason: str) -> None:
    """It ended: why, and how many arrows there were, were dropped, are stored."""
    db.write_nowait(_END_SQL, (count, dropped, stored, ended, reason, tid))


def prune(db: Database, keep: int) -> None:
    """Keep the newest ``keep`` traces."""
    db.write_nowait(_PRUNE_MSGS_SQL, (keep,))
    db.write_nowait(_PRUNE_SQL, (keep,))


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "node": r["node"],
        "who": r["who"],
        "started": r["started"],
        "ended": r["ended"],
        "end": r["end_reason"],
        "count": r["count"],
        "dropped": r["dropped"],
        "stored": r["stored"],
        "spec": json.loads(r["spec"]),
        "running": r["end_reason"] is None,
    }


def list_traces(db: Database, *, node: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Stored traces, newest first (without their arrows)."""
    sql = "SELECT * FROM traces"
    params: list[Any] = []
    if node is not None:
        sql += " WHERE node = ?"
        params.append(node)
    sql += " ORDER BY started DESC LIMIT ?"
    params.append(int(limit))
    return [_summary(r) for r in db.execute(sql, params)]


def get(db: Database, tid: str) -> dict[str, Any] | None:
    """One stored trace and its arrows, or None."""
    rows = db.execute("SELECT * FROM traces WHERE id = ?", (tid,))
    if not rows:
        return None
    msgs = db.execute("SELECT json FROM trace_messages WHERE trace = ? ORDER BY n", (tid,))
    return {"trace": _summary(rows[0]), "msgs": [json.loads(m["json"]) for m in msgs]}

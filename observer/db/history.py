"""The history's statements and queries: events, checkpoints, the audit log, the timeline.

The statements (``*_SQL``) are buffered by the history writer
(:mod:`observer.store`) on the database's writer thread; the query functions
take the :class:`~observer.db.Database` and may be called from any thread.
They see what has been committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from ._where import like
from ._where import window as _window
from .database import Database

__all__ = [
    "AUDIT_RESULT_SQL",
    "AUDIT_SQL",
    "CHECKPOINT_SQL",
    "EVENT_SQL",
    "audits",
    "checkpoint_at",
    "events",
    "events_after",
    "nodes",
    "timeline",
]

EVENT_SQL = "INSERT INTO events (node, seq, time, recv_time, kind, pid, name, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
CHECKPOINT_SQL = (
    "INSERT INTO checkpoints (node, time, seq, event_id, count, json) "
    "VALUES (?, ?, ?, (SELECT COALESCE(MAX(id), 0) FROM events), ?, ?)"
)
"""A checkpoint covers every event written before it (``event_id``: the last one's id)."""
AUDIT_SQL = (
    "INSERT INTO audit (time, who, from_addr, node, action, target, args) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
AUDIT_RESULT_SQL = "UPDATE audit SET result = ?, ok = ?, done_time = ? WHERE id = ?"

_NOT_REPLAYED = ("snapshot",)
"""Event kinds not replayed: a snapshot row only marks a snapshot (its checkpoint holds the picture)."""


def nodes(db: Database) -> list[str]:
    """Node names with stored history."""
    return [r["node"] for r in db.execute("SELECT DISTINCT node FROM checkpoints ORDER BY node")]


def events(
    db: Database,
    *,
    node: str | None = None,
    kinds: Iterable[str] | None = None,
    q: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 200,
    pid: str | None = None,
) -> list[dict[str, Any]]:
    """Stored events, newest first. ``q`` searches (case-insensitively) the
    whole event: reason, traceback, pid, name, child id..."""
    where, params = _window(node, since, until)
    if kinds is not None:
        ks = list(kinds)
        if not ks:
            return []
        where.append(f"kind IN ({','.join('?' * len(ks))})")
        params.extend(ks)
    if pid is not None:
        where.append("(pid = ? OR json LIKE ? ESCAPE '\\')")
        params.extend([pid, f"%{like(pid)}%"])
    if q:
        where.append("(json LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
        params.extend([f"%{like(q)}%", f"%{like(q)}%"])
    sql = "SELECT id, node, time, kind, pid, name, json FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time DESC, id DESC LIMIT ?"
    params.append(int(limit))
    out = []
    for r in db.execute(sql, params):
        d = json.loads(r["json"])
        d.update(
            {
                "id": r["id"],
                "node": r["node"],
                "time": r["time"],
                "kind": r["kind"],
                "pid": r["pid"],
                "proc_name": r["name"],
            }
        )
        out.append(d)
    return out


def audits(db: Database, *, limit: int = 200, node: str | None = None) -> list[dict[str, Any]]:
    """Audit rows, newest first (``args`` and ``result`` decoded)."""
    sql = "SELECT * FROM audit"
    params: list[Any] = []
    if node is not None:
        sql += " WHERE node = ?"
        params.append(node)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(int(limit))
    out = db.execute(sql, params)
    for d in out:
        d["args"] = json.loads(d["args"]) if d.get("args") else None
        d["result"] = json.loads(d["result"]) if d.get("result") else None
    return out


def checkpoint_at(db: Database, node: str, t: float) -> dict[str, Any] | None:
    """The last checkpoint of ``node`` at or before ``t``: ``{"time", "event_id", "json"}``, or None."""
    rows = db.execute(
        "SELECT time, event_id, json FROM checkpoints WHERE node = ? AND time <= ? ORDER BY time DESC, id DESC LIMIT 1",
        (node, t),
    )
    return rows[0] if rows else None


def events_after(db: Database, node: str, event_id: int, t: float) -> Iterator[tuple[dict[str, Any], float]]:
    """The messages of ``node`` to replay (:func:`observer.model.history.replay`): those
    written after the event ``event_id`` and stamped at or before ``t``, in the order
    they were written, each decoded and with the time it was received."""
    kinds = ", ".join(f"'{k}'" for k in _NOT_REPLAYED)
    for r in db.iterate(
        f"SELECT json, recv_time FROM events WHERE node = ? AND id > ? AND time <= ? AND kind NOT IN ({kinds}) "
        "ORDER BY id",
        (node, event_id, t),
    ):
        yield json.loads(r["json"]), float(r["recv_time"])


def timeline(db: Database, node: str, buckets: int = 100) -> dict[str, Any]:
    """Time range and event density for a scrubber: ``{"node", "start", "end",
    "bucket_width", "buckets": [{"t", "events", "exits", "restarts", "crashes"}],
    "checkpoints": [times]}`` (``start``/``end`` None when nothing is stored;
    ``crashes`` counts the exits with an exception)."""
    rng = db.execute("SELECT MIN(time) AS lo, MAX(time) AS hi FROM events WHERE node = ?", (node,))
    start, end = (rng[0]["lo"], rng[0]["hi"]) if rng else (None, None)
    cps = [r["time"] for r in db.execute("SELECT time FROM checkpoints WHERE node = ? ORDER BY time", (node,))]
    if start is None or end is None:
        return {"node": node, "start": None, "end": None, "bucket_width": None, "buckets": [], "checkpoints": cps}
    buckets = max(1, int(buckets))
    width = max((end - start) / buckets, 1e-6)
    out = [{"t": start + i * width, "events": 0, "exits": 0, "restarts": 0, "crashes": 0} for i in range(buckets)]
    # both queries keep to [start, end]: rows written since the range was
    # read (a live node) fall outside it, and would index past the buckets
    b = db.backend.floor_int("(time - ?) / ?")
    rows = db.execute(
        f"SELECT {b} AS b, COUNT(*) AS n, SUM(CASE WHEN kind = 'exit' THEN 1 ELSE 0 END) AS ex, "
        "SUM(CASE WHEN kind = 'restart' THEN 1 ELSE 0 END) AS rs "
        "FROM events WHERE node = ? AND time BETWEEN ? AND ? GROUP BY b",
        (start, width, node, start, end),
    )
    for r in rows:  # the end itself falls in bucket ``buckets``: counted in the last one
        o = out[min(int(r["b"]), buckets - 1)]
        o["events"] += r["n"]
        o["exits"] += r["ex"] or 0
        o["restarts"] += r["rs"] or 0
    for r in db.execute(
        f"SELECT {b} AS b, COUNT(*) AS n FROM crashes WHERE node = ? AND time BETWEEN ? AND ? "
        "AND exception IS NOT NULL GROUP BY b",
        (start, width, node, start, end),
    ):
        out[min(int(r["b"]), buckets - 1)]["crashes"] += r["n"]
    return {"node": node, "start": start, "end": end, "bucket_width": width, "buckets": out, "checkpoints": cps}

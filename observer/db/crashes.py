"""Crashes, stored once: one row per crash in ``crashes``, grouped by signature.

Storage
    A crash is an ``exit`` event whose reason is an exception, or that carries
    a crash report (the runtime builds one for every abnormal exit). The
    history writer (:mod:`observer.store`) calls :func:`rows_for` for every
    ``exit`` event and buffers what it returns: one row in ``crashes`` (the
    report itself, JSON, in its ``report`` column when there is one) and an
    upsert of the (node, signature) row of ``crash_groups``, a summary with a
    count and first/last seen, so that a crash repeating every minute reads
    as one problem, not a thousand.

Signature
    The exception's type and the innermost frame of the process's own code
    (``file:function``; the line is left out so an edit elsewhere in the file
    does not split a group). A report with no exception (killed by a signal,
    a custom exit reason) is grouped by its reason and the process's label.

Queries
    :func:`groups` (the groups, latest first), :func:`report` (one crash by
    id, with its group), :func:`of_process` (the crashes of a process and of
    the earlier incarnations of its child slot), :func:`find` (the latest
    crash of a pid), :func:`window` (crashes in a time window, searchable).
    All take the :class:`~observer.db.Database` and may be called from any thread.
"""

from __future__ import annotations

import json
from typing import Any

from ._where import like
from ._where import window as _window
from .database import Database

__all__ = [
    "GROUP_SQL",
    "INSERTED",
    "INSERT_SQL",
    "find",
    "groups",
    "of_process",
    "report",
    "rows_for",
    "signature",
    "window",
]

INSERT_SQL = (
    "INSERT INTO crashes (node, seq, time, pid, name, label, supervisor, child_id, reason_kind, exception, "
    "reason, traceback, signature, frame, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
"""One crash (the parameters :func:`rows_for` gives)."""

INSERTED = (
    "node",
    "seq",
    "time",
    "pid",
    "name",
    "label",
    "supervisor",
    "child_id",
    "reason_kind",
    "exception",
    "reason",
    "traceback",
    "signature",
    "frame",
    "report",
)
"""The columns :data:`INSERT_SQL` fills, in order."""

GROUP_SQL = (
    "INSERT INTO crash_groups (node, signature, exception, frame, count, first_seen, last_seen) "
    "VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (node, signature) DO UPDATE SET count = crash_groups.count + 1, "
    "first_seen = CASE WHEN excluded.first_seen < crash_groups.first_seen THEN excluded.first_seen "
    "ELSE crash_groups.first_seen END, "
    "last_seen = CASE WHEN excluded.last_seen > crash_groups.last_seen THEN excluded.last_seen "
    "ELSE crash_groups.last_seen END"
)
"""Count one more crash in its group."""

_COLUMNS = (
    "id, node, seq, time, pid, name, label, supervisor, child_id, reason_kind, exception, reason, traceback, "
    "signature, frame"
)


def signature(report: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """``(signature, exception, frame)`` of a wire crash report (or of an ``exit`` event)."""
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


def rows_for(
    node: str, seq: Any, when: float, msg: dict[str, Any], proc: dict[str, Any] | None = None
) -> list[tuple[str, tuple[Any, ...]]]:
    """The rows to write for one ``exit`` event ``msg`` (none if it is no crash).
    ``proc`` is what the history knew of the process (name, label, supervisor, child id)."""
    rep = msg.get("report")
    rep = rep if isinstance(rep, dict) else None
    if rep is None and msg.get("reason_kind") != "exception":
        return []
    src = proc or msg
    sig, exc, frame = signature(rep if rep is not None else msg)
    exc = exc or msg.get("exception")
    seq = seq if isinstance(seq, int) else None
    rk = msg.get("reason_kind") or ("exception" if exc else "other")
    body = json.dumps(rep, default=str, separators=(",", ":")) if rep is not None else None
    return [
        (
            INSERT_SQL,
            (
                node,
                seq,
                when,
                msg.get("pid"),
                src.get("name") or (rep or {}).get("name"),
                src.get("label") or (rep or {}).get("label"),
                src.get("supervisor") or (rep or {}).get("supervisor"),
                src.get("child_id") or (rep or {}).get("child_id"),
                rk,
                exc,
                msg.get("reason"),
                msg.get("traceback") or (rep or {}).get("traceback"),
                sig,
                frame,
                body,
            ),
        ),
        (GROUP_SQL, (node, sig, exc, frame, when, when)),
    ]


# -- reading ---------------------------------------------------------------------------------


def groups(db: Database, *, node: str | None = None, q: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Crash groups, the latest first, each with its latest crash's id, pid, name and time (``latest``)."""
    where: list[str] = []
    params: list[Any] = []
    if node:
        where.append("g.node = ?")
        params.append(node)
    if q:
        where.append("g.signature LIKE ? ESCAPE '\\'")
        params.append(f"%{like(q)}%")
    sql = (
        "SELECT g.id, g.node, g.signature, g.exception, g.frame, g.count, g.first_seen, g.last_seen, "
        "(SELECT c.id FROM crashes c WHERE c.node = g.node AND c.signature = g.signature "
        "ORDER BY c.time DESC, c.id DESC LIMIT 1) AS latest_id FROM crash_groups g"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY g.last_seen DESC, g.id DESC LIMIT ?"
    params.append(int(limit))
    out = db.execute(sql, params)
    ids = [d["latest_id"] for d in out if d["latest_id"] is not None]
    latest: dict[Any, dict[str, Any]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for r in db.execute(
            f"SELECT id, pid, COALESCE(name, label) AS name, time FROM crashes WHERE id IN ({marks})", chunk
        ):
            latest[r["id"]] = r
    for d in out:
        d["latest"] = latest.get(d["latest_id"])
    return out


def report(db: Database, crash_id: int) -> dict[str, Any] | None:
    """One crash with its report (a short one built from the exit if the agent sent
    none), its group, the ids of its group's latest crashes and a link to the tree."""
    if not -(2**63) <= crash_id < 2**63:  # no such row, and no SQL integer either
        return None
    rows = db.execute(f"SELECT {_COLUMNS}, report FROM crashes WHERE id = ?", (crash_id,))
    if not rows:
        return None
    row = rows[0]
    raw = row.pop("report")
    body: dict[str, Any] = (
        json.loads(raw)
        if raw
        else {
            k: row[k]
            for k in ("pid", "name", "label", "supervisor", "child_id", "exception", "reason", "traceback", "time")
        }
    )
    row["name"] = row["name"] or row["label"]
    grp = db.execute("SELECT * FROM crash_groups WHERE node = ? AND signature = ?", (row["node"], row["signature"]))
    others = db.execute(
        "SELECT id, pid, time FROM crashes WHERE node = ? AND signature = ? ORDER BY time DESC, id DESC LIMIT 50",
        (row["node"], row["signature"]),
    )
    path_pids = [a.get("pid") for a in body.get("ancestry") or [] if isinstance(a, dict)]
    return {
        **row,
        "has_report": raw is not None,
        "group": grp[0] if grp else None,
        "recent": others,
        "report": body,
        "tree_url": f"/nodes/{row['node']}/tree?path=" + ",".join(str(p) for p in path_pids if p),
    }


def of_process(
    db: Database, node: str, pid: str, supervisor: str | None = None, child_id: str | None = None
) -> list[dict[str, Any]]:
    """Crashes of ``pid`` and of the earlier incarnations of its child slot, latest first (at most 20)."""
    sql = "SELECT id, pid, time, exception, reason, signature FROM crashes WHERE node = ? AND (pid = ?"
    params: list[Any] = [node, pid]
    if supervisor and child_id:
        sql += " OR (supervisor = ? AND child_id = ?)"
        params += [supervisor, child_id]
    sql += ") ORDER BY time DESC, id DESC LIMIT 20"
    return db.execute(sql, params)


def find(db: Database, node: str, pid: str, before: float | None = None) -> int | None:
    """The id of the latest crash of ``pid`` on ``node`` (at or before ``before``), or None."""
    sql = "SELECT id FROM crashes WHERE node = ? AND pid = ?"
    params: list[Any] = [node, pid]
    if before is not None:
        sql += " AND time <= ?"
        params.append(before)
    rows = db.execute(sql + " ORDER BY time DESC, id DESC LIMIT 1", params)
    return int(rows[0]["id"]) if rows else None


def window(
    db: Database,
    *,
    node: str | None = None,
    q: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Crashes in a time window, newest first, without their reports (``has_report`` says
    whether :func:`report` has one); ``q`` searches exception, reason, traceback, pid,
    name and label."""
    where, params = _window(node, since, until)
    if q:
        cols = ("exception", "reason", "traceback", "pid", "name", "label")
        where.append("(" + " OR ".join(f"{c} LIKE ? ESCAPE '\\'" for c in cols) + ")")
        params.extend([f"%{like(q)}%"] * len(cols))
    sql = f"SELECT {_COLUMNS}, CASE WHEN report IS NULL THEN 0 ELSE 1 END AS has_report FROM crashes"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time DESC, id DESC LIMIT ?"
    params.append(int(limit))
    out = db.execute(sql, params)
    for d in out:
        d["has_report"] = bool(d["has_report"])
    return out

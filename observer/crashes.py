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

Routes (registered by :func:`register`)
    ``GET /crashes`` (groups) and ``GET /crash/<id>`` (one report;
    ``/crash/find?node=&pid=&time=`` redirects to a process's latest), their
    twins ``GET /api/crashes?node=&q=&limit=`` and ``GET /api/crashes/<id>``,
    ``GET /api/nodes/<node>/processes/<pid>/crashes`` (the crashes of that
    process and of the earlier incarnations of its child slot) and
    ``POST /api/nodes/<node>/processes/<pid>/flight_recorder {"on", "subtree",
    "size"}`` (operator only: gated and audited as the other actions).

Threading rules
    Request handlers open their own short read-only SQLite connection; the
    writer thread only calls :func:`rows_for` (pure).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from flask import Flask, abort, current_app, redirect, render_template, request

__all__ = ["SCHEMA", "SQL", "group_list", "register", "report", "rows_for", "signature"]

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


# -- routes ------------------------------------------------------------------------------------


def register(app: Flask) -> None:
    """Add the crash pages, their JSON twins and the flight-recorder action."""
    from agent.client import AgentError

    from . import api
    from .pages import page_config
    from .permissions import is_operator, refuse
    from .store import AuditError

    def st() -> Any:
        return current_app.extensions["observer"]

    def store_path() -> str:
        return str(st().store.path)

    def _page(view: str, title: str, **extra: Any) -> Any:
        cfg = page_config(view) | extra
        return render_template(f"{view}.html", page_config=cfg, view=view, node=None, pid=None, title=title)

    @app.get("/crashes")
    def crashes_page() -> Any:
        return _page("crashes", "Crashes")

    @app.get("/crash/<int:report_id>")
    def crash_page(report_id: int) -> Any:
        if report(store_path(), report_id) is None:
            abort(404, description=f"no crash report {report_id}")
        return _page("crash", f"Crash report {report_id}", crash_id=report_id)

    @app.get("/crash/find")
    def crash_find() -> Any:
        node, pid = api._str("node"), api._str("pid")
        if not node or not pid:
            abort(400, description="node and pid are required")
        t = api._float("time")
        sql = "SELECT id FROM crash_reports WHERE node = ? AND pid = ?"
        params: list[Any] = [node, pid]
        if t is not None:
            sql += " AND time <= ?"
            params.append(t + 1.0)
        rows = _query(store_path(), sql + " ORDER BY time DESC, id DESC LIMIT 1", params)
        if not rows:
            abort(404, description=f"no crash report for {pid} on {node}")
        return redirect(f"/crash/{int(rows[0]['id'])}")

    @app.get("/api/crashes")
    def api_crashes() -> Any:
        limit = api._int("limit", 200, 1, 5000)
        return {"groups": group_list(store_path(), node=api._str("node"), q=api._str("q"), limit=limit)}

    @app.get("/api/crashes/<int:report_id>")
    def api_crash(report_id: int) -> Any:
        rep = report(store_path(), report_id)
        if rep is None:
            raise api.ApiError(404, "unknown_crash", f"no crash report {report_id}")
        return rep

    @app.get("/api/nodes/<node>/processes/<pid>/crashes")
    def api_process_crashes(node: str, pid: str) -> Any:
        _att, model = api._node(node)
        try:
            pid = api._pid(model, pid)
        except api.ApiError:  # exited: its own reports only
            pid = pid if pid.startswith("<") else f"<{pid}>"
        rec = model.process(pid)
        sup = rec.get("supervisor") if rec else None
        cid = rec.get("child_id") if rec else None
        p = rec["pid"] if rec else pid
        return {"node": node, "pid": p, "crashes": of_process(store_path(), node, p, sup, cid)}

    @app.post("/api/nodes/<node>/processes/<pid>/flight_recorder")
    def api_flight_recorder(node: str, pid: str) -> Any:
        body = api._body()
        att, model = api._node(node)
        p = api._pid(model, pid)
        on, subtree, size = body.get("on", True), body.get("subtree", False), body.get("size", 20)
        if not isinstance(on, bool) or not isinstance(subtree, bool):
            raise api.ApiError(400, "bad_args", "'on' and 'subtree' must be booleans")
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 1000:
            raise api.ApiError(400, "bad_args", "'size' must be an integer in [1, 1000]")
        state = st()
        who, where = api.current_user(), request.remote_addr
        args: dict[str, Any] = {"pid": p, "on": on, "subtree": subtree, "size": size}
        if not is_operator():  # the login's role, checked on every request
            return refuse(
                "flight_recorder", "a read-only login cannot switch flight recorders", node=att.name, target=p
            )
        if not state.allow_destructive:  # operator only, checked on every request
            try:
                aid = state.store.audit(who, where, "flight_recorder", p, args, node=att.name)
                state.store.audit_result(aid, {"error": "destructive_actions_disabled"}, ok=False)
            except AuditError:
                pass
            return api._error(403, "destructive_actions_disabled", "operator actions are off on this server")
        try:
            result = att.run_audited("flight_recorder", who=who, from_addr=where, **args)
        except AuditError as exc:
            return api._error(503, "audit_unavailable", str(exc))
        except AgentError as exc:
            return api._error(api._AGENT_STATUS.get(exc.code, 502), exc.code, exc.message)
        return {"ok": True, "result": result}

"""Crash pages and their JSON twins (routes only: crashes are stored and queried by
:mod:`observer.db.crashes`, through the history store).

Routes (registered by :func:`register`)
    ``GET /crashes`` (groups) and ``GET /crash/<id>`` (one crash;
    ``/crash/find?node=&pid=&time=`` redirects to a process's latest), their
    twins ``GET /api/crashes?node=&q=&limit=`` and ``GET /api/crashes/<id>``,
    ``GET /api/nodes/<node>/processes/<pid>/crashes`` (the crashes of that
    process and of the earlier incarnations of its child slot) and
    ``POST /api/nodes/<node>/processes/<pid>/flight_recorder {"on", "subtree",
    "size"}`` (operator only: gated and audited as the other actions).

Threading rules
    Request handlers only; the store is thread-safe.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, current_app, redirect, render_template, request

__all__ = ["register"]


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

    def _page(view: str, title: str, **extra: Any) -> Any:
        cfg = page_config(view) | extra
        return render_template(f"{view}.html", page_config=cfg, view=view, node=None, pid=None, title=title)

    @app.get("/crashes")
    def crashes_page() -> Any:
        return _page("crashes", "Crashes")

    @app.get("/crash/<int:report_id>")
    def crash_page(report_id: int) -> Any:
        if st().store.crash(report_id) is None:
            abort(404, description=f"no crash report {report_id}")
        return _page("crash", f"Crash report {report_id}", crash_id=report_id)

    @app.get("/crash/find")
    def crash_find() -> Any:
        node, pid = api._str("node"), api._str("pid")
        if not node or not pid:
            abort(400, description="node and pid are required")
        t = api._float("time")
        found = st().store.find_crash(node, pid, None if t is None else t + 1.0)
        if found is None:
            abort(404, description=f"no crash report for {pid} on {node}")
        return redirect(f"/crash/{found}")

    @app.get("/api/crashes")
    def api_crashes() -> Any:
        limit = api._int("limit", 200, 1, 5000)
        return {"groups": st().store.crash_groups(node=api._str("node"), q=api._str("q"), limit=limit)}

    @app.get("/api/crashes/<int:report_id>")
    def api_crash(report_id: int) -> Any:
        rep = st().store.crash(report_id)
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
        return {"node": node, "pid": p, "crashes": st().store.process_crashes(node, p, sup, cid)}

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

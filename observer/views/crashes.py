"""Crash reports: the crashes and crash pages, their JSON twins, a process's
crashes, and the flight-recorder switch.

    GET  /crashes                       page   GET /api/crashes[?node=&q=&limit=]  groups, latest first
    GET  /crash/<id>                    page   GET /api/crashes/<id>               one report with its group
    GET  /crash/find?node=&pid=[&time=]        redirects to that process's latest report
    GET  /api/nodes/<node>/processes/<pid>/crashes    that process's and its child slot's reports
    POST /api/nodes/<node>/processes/<pid>/flight_recorder {"on", "subtree", "size"}  (operator; gated, audited)

New crash reports are pushed to the ``crashes`` feed of ``/live``
(:mod:`observer.live`): the page starts from ``/api/crashes`` and refetches
when one arrives.

Threading rules
    Request handlers; the history store (:mod:`observer.db.crashes` underneath) is thread-safe.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect

from ..errors import BadRequest, NotFound
from ..permissions import is_operator
from .common import arg_float, arg_int, arg_str, body, find_node, find_pid, render_page, run_gated, state

__all__ = ["blueprint"]

blueprint = Blueprint("crashes", __name__)


@blueprint.get("/crashes")
def crashes_page() -> Any:
    return render_page("crashes", "Crashes")


@blueprint.get("/crash/<int:report_id>")
def crash_page(report_id: int) -> Any:
    if state().store.crash(report_id) is None:
        raise NotFound(f"no crash report {report_id}", code="unknown_crash")
    return render_page("crash", f"Crash report {report_id}", crash_id=report_id)


@blueprint.get("/crash/find")
def crash_find() -> Any:
    node, pid = arg_str("node"), arg_str("pid")
    if not node or not pid:
        raise BadRequest("node and pid are required", code="bad_query")
    t = arg_float("time")
    found = state().store.find_crash(node, pid, None if t is None else t + 1.0)
    if found is None:
        raise NotFound(f"no crash report for {pid} on {node}", code="unknown_crash")
    return redirect(f"/crash/{found}")


@blueprint.get("/api/crashes")
def api_crashes() -> Any:
    limit = arg_int("limit", 200, 1, 5000)
    return {"groups": state().store.crash_groups(node=arg_str("node"), q=arg_str("q"), limit=limit)}


@blueprint.get("/api/crashes/<int:report_id>")
def api_crash(report_id: int) -> Any:
    rep = state().store.crash(report_id)
    if rep is None:
        raise NotFound(f"no crash report {report_id}", code="unknown_crash")
    return rep


@blueprint.get("/api/nodes/<node>/processes/<pid>/crashes")
def api_process_crashes(node: str, pid: str) -> Any:
    _att, model = find_node(node)
    try:
        pid = find_pid(model, pid)
    except NotFound:  # exited: its own reports only
        pid = pid if pid.startswith("<") else f"<{pid}>"
    rec = model.process(pid)
    sup = rec.get("supervisor") if rec else None
    cid = rec.get("child_id") if rec else None
    p = rec["pid"] if rec else pid
    return {"node": node, "pid": p, "crashes": state().store.process_crashes(node, p, sup, cid)}


@blueprint.post("/api/nodes/<node>/processes/<pid>/flight_recorder")
def api_flight_recorder(node: str, pid: str) -> Any:
    data = body()
    att, model = find_node(node)
    p = find_pid(model, pid)
    on, subtree, size = data.get("on", True), data.get("subtree", False), data.get("size", 20)
    if not isinstance(on, bool) or not isinstance(subtree, bool):
        raise BadRequest("'on' and 'subtree' must be booleans", code="bad_args")
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 1000:
        raise BadRequest("'size' must be an integer in [1, 1000]", code="bad_args")
    args: dict[str, Any] = {"pid": p, "on": on, "subtree": subtree, "size": size}
    return run_gated(
        att,
        "flight_recorder",
        args,
        allowed=is_operator(),
        refusal="a read-only login cannot switch flight recorders",
    )

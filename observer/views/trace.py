"""Message traces: start one, watch its sequence chart live, replay and export it.

    GET  /nodes/<node>/trace[?pids=]          page: start a trace, live chart
    GET  /traces                              page: stored traces (history)
    GET  /traces/<id>                         page: one trace (live if running, else replay)
    GET  /api/traces[?node=]                  running (this server) and stored traces
    POST /api/nodes/<node>/traces             start: {pids | pattern, dir, max_msgs, max_rate, duration}
    POST /api/traces/<id>/stop                stop a running trace
    GET  /api/traces/<id>                     a trace and its arrows
    GET  /api/traces/<id>/export?format=json|text

Starting and stopping need the ``trace`` grant (a read-only login may have
it); a refusal is audited (:func:`observer.views.common.refuse`), and so is
every start and stop (:class:`observer.trace.TraceService`). Arrows are pushed
on the ``trace`` feed of ``/live``.

Threading rules
    Request handlers; starting and stopping block on the agent.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any

from flask import Blueprint, Response, request

from agent.client import AgentError

from .. import trace as T
from ..errors import BadRequest, Forbidden, NotFound
from ..permissions import permitted, who
from ..store import AuditError
from .common import arg_str, body, find_node, find_pid, refuse, render_page, state

__all__ = ["blueprint"]

blueprint = Blueprint("trace", __name__)

LIMITS = {"max_msgs": (1, 100_000, 100), "max_rate": (1, 10_000, 100), "duration": (0.05, 3600, 60)}


# -- pages ---------------------------------------------------------------------------------------


@blueprint.get("/nodes/<node>/trace")
def trace_page(node: str) -> Any:
    find_node(node)
    return render_page("trace", f"{node}: message trace", node, pids=arg_str("pids", max_len=4000), trace_id=None)


@blueprint.get("/traces")
def traces_page() -> Any:
    return render_page("trace", "Message traces", None, pids=None, trace_id=None)


@blueprint.get("/traces/<tid>")
def one_trace_page(tid: str) -> Any:
    data = _find(tid)
    node = data["trace"]["node"]
    return render_page("trace", f"trace {tid}", node if state().model(node) else None, trace_id=tid, pids=None)


# -- JSON ------------------------------------------------------------------------------------------


def _may_read() -> None:
    """Messages are what a process holds: reading traces needs ``inspect`` or ``trace``."""
    if not (permitted("inspect") or permitted("trace")):
        raise Forbidden("this login token allows neither inspect nor trace", code="not_permitted")


@blueprint.get("/api/traces")
def api_traces() -> Any:
    _may_read()
    node = arg_str("node")
    st = state()
    live = st.traces.live(node)
    running = {t["id"] for t in live}
    stored = [t for t in T.stored(st.store, node) if t["id"] not in running]
    return {"live": live, "stored": stored, "can_trace": permitted("trace")}


@blueprint.post("/api/nodes/<node>/traces")
def api_start(node: str) -> Any:
    data = body()
    _, model = find_node(node)
    if not permitted("trace"):
        refuse("trace_start", "this login token does not allow trace", node=node, target=str(data.get("pids")))
    pids = _pids(model, data)
    direction = data.get("dir", "both")
    if direction not in ("in", "out", "both"):
        raise BadRequest("'dir' must be in, out or both", code="bad_args")
    limits = {k: _limit(data, k, *v) for k, v in LIMITS.items()}
    try:
        summary = state().traces.start(
            node,
            pids,
            who=who(),
            from_addr=request.remote_addr,
            direction=direction,
            max_msgs=int(limits["max_msgs"]),
            max_rate=int(limits["max_rate"]),
            duration=float(limits["duration"]),
        )
    except AuditError:
        raise
    except AgentError as exc:
        raise BadRequest(f"the agent refused the trace: {exc.message}", code=exc.code) from None
    return {"ok": True, "trace": summary}


@blueprint.post("/api/traces/<tid>/stop")
def api_stop(tid: str) -> Any:
    tr = state().traces.get(tid)
    node = tr.node if tr is not None else None
    if not permitted("trace"):
        refuse("trace_stop", "this login token does not allow trace", node=node, target=tid)
    try:
        summary = state().traces.stop(tid, who=who(), from_addr=request.remote_addr)
    except KeyError:
        raise NotFound(f"no running trace {tid!r}", code="unknown_trace") from None
    return {"ok": True, "trace": summary}


@blueprint.get("/api/traces/<tid>")
def api_trace(tid: str) -> Any:
    return _find(tid)


@blueprint.get("/api/traces/<tid>/export")
def api_export(tid: str) -> Any:
    data = _find(tid)
    fmt = arg_str("format") or "json"
    if fmt == "json":
        text, mime, ext = json.dumps(data, indent=1, default=str), "application/json", "json"
    elif fmt == "text":
        text, mime, ext = T.as_text(data["trace"], data["msgs"]), "text/plain; charset=utf-8", "txt"
    else:
        raise BadRequest("format must be json or text", code="bad_query")
    return Response(text, mimetype=mime, headers={"Content-Disposition": f'attachment; filename="trace-{tid}.{ext}"'})


# -- helpers ---------------------------------------------------------------------------------------


def _find(tid: str) -> dict[str, Any]:
    _may_read()
    if len(tid) > 64:
        raise NotFound("no such trace", code="unknown_trace")
    st = state()
    data = st.traces.snapshot(tid) or T.load(st.store, tid)
    if data is None:
        raise NotFound(f"no trace {tid!r}", code="unknown_trace")
    return dict(data)


def _pids(model: Any, data: dict[str, Any]) -> list[str]:
    """The processes to trace: ``pids`` (pids or names) or a name/label ``pattern`` (glob)."""
    raw = data.get("pids")
    pattern = data.get("pattern")
    if raw is not None:
        if not isinstance(raw, list) or not raw or len(raw) > 100 or not all(isinstance(p, str) for p in raw):
            raise BadRequest("'pids' must be a list of 1-100 pids or names", code="bad_args")
        return [find_pid(model, p) for p in raw]
    if not isinstance(pattern, str) or not pattern.strip() or len(pattern) > 200:
        raise BadRequest("give 'pids' or a name/label 'pattern'", code="bad_args")
    pat = pattern.strip()
    needle = pat.replace("*", " ").replace("?", " ").split()
    hits = model.search(max(needle, key=len) if needle else pat, limit=5000) if needle else []
    out = [
        h["pid"]
        for h in hits
        if fnmatch.fnmatchcase(h.get("name") or "", pat)
        or fnmatch.fnmatchcase(h.get("label") or "", pat)
        or h.get("name") == pat
    ]
    if not out:
        raise NotFound(f"no process named or labelled like {pat!r}", code="unknown_pid")
    return out[:100]


def _limit(data: dict[str, Any], key: str, lo: float, hi: float, default: float) -> float:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise BadRequest(f"'{key}' must be a number in [{lo}, {hi}]", code="bad_args")
    if key != "duration" and v != int(v):
        raise BadRequest(f"'{key}' must be an integer", code="bad_args")
    return float(v)

"""Chaos experiments: the Chaos page and its JSON twins (see ``docs/chaos.md``).

    GET  /chaos[?node=]                       page
    GET  /api/chaos/experiments[?node=&limit=] running experiments and past ones (the history)
    POST /api/chaos/experiments               start one: {"node", "confirm": true, "experiment": {...file-shaped...}}
                                              or {"node", "confirm": true, "kill": {...}, "hypothesis": {...}, ...}
    GET  /api/chaos/experiments/<id>[?kills_from=N] its journal (live while it runs); kills from index N
    POST /api/chaos/experiments/<id>/abort    stop killing now
    GET  /api/chaos/active?node=&since=T      kills of running experiments since T

Progress is pushed to the ``chaos`` feed of ``/live`` (:class:`ChaosService`):
the page loads a journal once, then follows the pushes.

Starting is gated like every destructive action: the login token's grant
must include ``chaos``, the server must run with
``--allow-destructive-actions``, the body must say ``"confirm": true``;
refusals are audited. The experiment is audited before it starts
(``chaos_start``) and so is every kill (``kill``, with the experiment id),
before it is sent; an abort is audited (``chaos_abort``).

Threading rules
    Handlers run on request threads; engines run on the attach loop thread.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from ..chaos.engine import Engine
from ..chaos.experiment import ExperimentError
from ..chaos.web import ChaosService, experiment_from_body
from ..errors import BadRequest, Conflict, NotFound, Unavailable
from ..permissions import permitted, who
from ..store import AuditError
from .common import arg_float, arg_int, arg_str, body, page_config, refuse, render_page, state

__all__ = ["blueprint", "service"]

blueprint = Blueprint("chaos", __name__)


def service() -> ChaosService:
    svc: ChaosService = current_app.extensions["chaos"]
    return svc


@blueprint.get("/chaos")
def chaos_page() -> Any:
    node = arg_str("node")
    if node is not None and state().model(node) is None:
        node = None
    may = bool(page_config("chaos").get("allow_destructive")) and permitted("chaos")
    return render_page("chaos", "Chaos", node, may_chaos=may)


@blueprint.get("/api/chaos/experiments")
def api_list() -> Any:
    node = arg_str("node")
    limit = arg_int("limit", 50, 1, 500)
    svc = service()
    running = [e.journal.to_dict(kills_limit=0) | {"kills": []} for e in svc.running(node)]
    return {"running": running, "history": svc.history.list(node=node, limit=limit)}


@blueprint.get("/api/chaos/experiments/<exp_id>")
def api_get(exp_id: str) -> Any:
    start = arg_int("kills_from", 0, 0, 10_000_000)
    svc = service()
    eng = svc.get(exp_id)
    j = eng.journal.to_dict() if eng is not None else svc.history.get(exp_id)
    if j is None:
        raise NotFound(f"no experiment {exp_id!r}", code="unknown_experiment")
    j["kills_total"] = len(j["kills"])
    j["kills"] = j["kills"][start : start + 5000]
    j["kills_from"] = start
    return j


@blueprint.get("/api/chaos/active")
def api_active() -> Any:
    node = arg_str("node")
    since = arg_float("since") or 0.0
    out = []
    for e in service().running(node):
        with e.journal.lock:
            kills = [dict(k) for k in e.journal.kills[-500:] if k["time"] > since]
        out.append({"id": e.id, "node": e.att.name, "kills": kills})
    return {"experiments": out}


@blueprint.post("/api/chaos/experiments")
def api_start() -> Any:
    st = state()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="bad_json")
    node = data.get("node")
    if not permitted("chaos"):
        refuse("chaos", "this login token does not allow chaos", node=str(node))
    if not st.allow_destructive:
        why = "destructive actions are off on this server"
        refuse("chaos", why, node=str(node), code="destructive_actions_disabled")
    if not isinstance(node, str) or st.attachment(node) is None:
        raise NotFound(f"no node {node!r}", code="unknown_node")
    try:
        exp = experiment_from_body(data)
    except ExperimentError as exc:
        raise BadRequest(str(exc), code="bad_experiment") from None
    if data.get("confirm") is not True:
        raise BadRequest('say "confirm": true to start killing processes', code="confirmation_required")
    att = st.attachment(node)
    if "kill" not in ((att.client.welcome.get("commands") or []) if att.client is not None else []):
        raise Unavailable(f"{node} is not attached as operator", code="not_attached")
    svc = service()
    if svc.running(node):
        raise Conflict(f"an experiment is already running on {node}", code="already_running")
    user, addr = who(), request.remote_addr
    store = st.store

    def audit(target: str, args: dict[str, Any]) -> int:
        return int(store.audit(user, addr, "kill", target, args, node=node))

    engine = Engine(att, exp, loop=st.manager.loop, audit=audit)
    aid = store.audit(user, addr, "chaos_start", engine.id, exp.to_dict(), node=node)  # AuditError: 503
    svc.start(engine)
    store.audit_result(aid, {"experiment": engine.id}, ok=True)
    return {"ok": True, "id": engine.id}, 202


@blueprint.post("/api/chaos/experiments/<exp_id>/abort")
def api_abort(exp_id: str) -> Any:
    st = state()
    body()  # an empty body or a JSON object
    eng = service().get(exp_id)
    if eng is None:
        raise NotFound(f"no running experiment {exp_id!r}", code="unknown_experiment")
    if not permitted("chaos"):
        refuse("chaos_abort", "this login token does not allow chaos", node=eng.att.name, target=exp_id)
    try:
        aid = st.store.audit(who(), request.remote_addr, "chaos_abort", exp_id, {}, node=eng.att.name)
    except AuditError:
        aid = -1  # stopping is never refused for want of an audit row
    eng.abort(f"aborted by {who()}")
    st.store.audit_result(aid, {"aborted": True}, ok=True)
    return {"ok": True, "id": exp_id, "aborted_at": eng.journal.aborted_at}

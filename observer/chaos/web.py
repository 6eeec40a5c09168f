"""The Chaos page and its JSON endpoints (a Flask blueprint; see ``docs/chaos.md``).

    GET  /chaos                               the page
    GET  /api/chaos/experiments[?node=&limit=] running experiments and past ones (the history)
    POST /api/chaos/experiments               start one: {"node", "confirm": true, "experiment": {...file-shaped...}}
                                              or {"node", "confirm": true, "kill": {...}, "hypothesis": {...}, ...}
    GET  /api/chaos/experiments/<id>[?kills_from=N] its journal (live while it runs); kills from index N
    POST /api/chaos/experiments/<id>/abort    stop killing now
    GET  /api/chaos/active?node=&since=T      kills of running experiments since T (for the tree's flashes)

Starting is gated like every destructive action: the login token's grant
must include ``chaos``, the server must run with
``--allow-destructive-actions``, the body must say ``"confirm": true``;
refusals are audited. The experiment is audited before it starts
(``chaos_start``) and so is every kill (``kill``, with the experiment id),
before it is sent; an abort is audited (``chaos_abort``). Journals go to the
history's ``chaos_experiments`` table when an experiment starts and ends.

Threading rules
    Handlers run on request threads; engines run on the attach loop thread
    (:class:`~observer.chaos.engine.Engine`); :class:`ChaosService` guards its
    registry with a lock.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, render_template, request
from markupsafe import Markup

from ..permissions import permitted, refuse, who
from ..store import AuditError
from .engine import Engine
from .experiment import Experiment, ExperimentError, Probe, kill_spec, parse
from .journal import ChaosHistory

__all__ = ["ChaosService", "blueprint", "register"]

log = logging.getLogger("observer.chaos.web")

blueprint = Blueprint("chaos", __name__)


class ChaosService:
    """Running experiments of one app, and the history of past ones."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.lock = threading.Lock()
        self.engines: dict[str, Engine] = {}
        self.history = ChaosHistory(state.store.db)

    def running(self, node: str | None = None) -> list[Engine]:
        with self.lock:
            engines = list(self.engines.values())
        return [e for e in engines if e.journal.ended is None and (node is None or e.att.name == node)]

    def get(self, exp_id: str) -> Engine | None:
        with self.lock:
            return self.engines.get(exp_id)

    def start(self, engine: Engine) -> None:
        with self.lock:
            self.engines[engine.id] = engine
            while len(self.engines) > 20:  # finished ones stay a while, then live on in the history
                old = next((k for k, e in self.engines.items() if e.journal.ended is not None), None)
                if old is None:
                    break
                del self.engines[old]
        self._save(engine.journal.to_dict())
        fut = engine.start()
        fut.add_done_callback(lambda f: threading.Thread(target=self._finished, args=(engine,), daemon=True).start())

    def _finished(self, engine: Engine) -> None:
        self._save(engine.journal.to_dict())

    def _save(self, journal: dict[str, Any]) -> None:
        try:
            self.history.save(journal)
        except Exception:
            log.exception("chaos: could not save the journal of %s", journal.get("id"))


def _service() -> ChaosService:
    svc: ChaosService = current_app.extensions["chaos"]
    return svc


def _error(status: int, code: str, message: str) -> Response:
    resp = jsonify({"ok": False, "error": code, "message": message})
    resp.status_code = status
    return resp


def _json_for_script(obj: Any) -> Markup:
    text = json.dumps(obj, separators=(",", ":"), default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@blueprint.get("/chaos")
def chaos_page() -> Any:
    from ..pages import page_config

    node = request.args.get("node") or None
    state = current_app.extensions["observer"]
    if node is not None and state.model(node) is None:
        node = None
    cfg = page_config("chaos", node)
    cfg["may_chaos"] = bool(cfg.get("allow_destructive")) and permitted("chaos")
    return render_template(
        "chaos.html", page_config=cfg, config_json=_json_for_script(cfg), view="chaos", node=node, title="Chaos"
    )


@blueprint.get("/api/chaos/experiments")
def api_list() -> Any:
    node = request.args.get("node") or None
    try:
        limit = max(1, min(500, int(request.args.get("limit") or 50)))
    except ValueError:
        return _error(400, "bad_query", "limit must be an integer")
    svc = _service()
    running = [e.journal.to_dict(kills_limit=0) | {"kills": []} for e in svc.running(node)]
    return {"running": running, "history": svc.history.list(node=node, limit=limit)}


@blueprint.get("/api/chaos/experiments/<exp_id>")
def api_get(exp_id: str) -> Any:
    try:
        start = max(0, int(request.args.get("kills_from") or 0))
    except ValueError:
        return _error(400, "bad_query", "kills_from must be an integer")
    svc = _service()
    eng = svc.get(exp_id)
    j = eng.journal.to_dict() if eng is not None else svc.history.get(exp_id)
    if j is None:
        return _error(404, "unknown_experiment", f"no experiment {exp_id!r}")
    j["kills_total"] = len(j["kills"])
    j["kills"] = j["kills"][start : start + 5000]
    j["kills_from"] = start
    return j


@blueprint.get("/api/chaos/active")
def api_active() -> Any:
    node = request.args.get("node") or None
    try:
        since = float(request.args.get("since") or 0.0)
    except ValueError:
        return _error(400, "bad_query", "since must be a number")
    if not math.isfinite(since):
        return _error(400, "bad_query", "since must be finite")
    out = []
    for e in _service().running(node):
        with e.journal.lock:
            kills = [dict(k) for k in e.journal.kills[-500:] if k["time"] > since]
        out.append({"id": e.id, "node": e.att.name, "kills": kills})
    return {"experiments": out}


def _probes(h: dict[str, Any]) -> tuple[Probe, ...]:
    """The browser form's hypothesis -> probes (checked like a file's)."""
    if not isinstance(h, dict):
        raise ExperimentError("hypothesis must be an object")
    raw: list[dict[str, Any]] = []

    def add(func: str, tol: Any, name: str, args: dict[str, Any] | None = None) -> None:
        provider = {"type": "observer", "func": func, "arguments": args or {}}
        raw.append({"type": "probe", "name": name, "tolerance": tol, "provider": provider})

    add("recovery_ms", h.get("recovery_ms", 5000), "killed children back in time")
    add("supervisors_gave_up", h.get("max_give_ups", 0), "no supervisor gave up")
    if h.get("children_restored", True):
        add("children_restored", True, "every supervised child is back")
    if h.get("process_tolerance") not in (None, ""):
        add("process_count", h["process_tolerance"], "process count back to its level")
    for m in h.get("mailbox") or []:
        if not isinstance(m, dict):
            raise ExperimentError("hypothesis.mailbox entries must be objects {name, max}")
        add("mailbox", m.get("max"), f"mailbox of {m.get('name')}", {"name": m.get("name")})
    if h.get("alive"):
        add("alive", True, "named processes alive", {"names": h["alive"]})
    exp = parse({"title": "-", "steady-state-hypothesis": {"probes": raw}, "method": [_KILL_PLACEHOLDER]})
    return exp.probes


_KILL_PLACEHOLDER = {"type": "action", "provider": {"type": "observer", "func": "kill", "arguments": {"kills": 1}}}


def experiment_from_body(body: dict[str, Any]) -> Experiment:
    """The experiment a POST describes (raises :class:`ExperimentError`)."""
    if "experiment" in body:
        return parse(body["experiment"])
    kill = body.get("kill")
    if not isinstance(kill, dict):
        raise ExperimentError("give 'experiment' (file-shaped) or 'kill' (the kill policy)")
    spec = kill_spec(kill, where="kill")
    settle = body.get("settle_s", 10.0)
    if isinstance(settle, bool) or not isinstance(settle, int | float) or not 0 <= settle <= 600:
        raise ExperimentError("settle_s must be a number between 0 and 600")
    abort = body.get("abort_on_deviation", True)
    if not isinstance(abort, bool):
        raise ExperimentError("abort_on_deviation must be true or false")
    title = body.get("title") or f"{spec.mode} {spec.policy} kills"
    if not isinstance(title, str) or len(title) > 200:
        raise ExperimentError("title must be a short string")
    return Experiment(
        title=title,
        probes=_probes(body.get("hypothesis") or {}),
        method=(spec,),
        abort_on_deviation=abort,
        settle_s=float(settle),
    )


@blueprint.post("/api/chaos/experiments")
def api_start() -> Any:
    state = current_app.extensions["observer"]
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "bad_json", "the body must be a JSON object")
    node = body.get("node")
    if not permitted("chaos"):
        return refuse("chaos", "this login token does not allow chaos", node=str(node))
    if not state.allow_destructive:
        return refuse(
            "chaos", "destructive actions are off on this server", node=str(node), code="destructive_actions_disabled"
        )
    if not isinstance(node, str) or state.attachment(node) is None:
        return _error(404, "unknown_node", f"no node {node!r}")
    try:
        exp = experiment_from_body(body)
    except ExperimentError as exc:
        return _error(400, "bad_experiment", str(exc))
    if body.get("confirm") is not True:
        return _error(400, "confirmation_required", 'say "confirm": true to start killing processes')
    att = state.attachment(node)
    if "kill" not in ((att.client.welcome.get("commands") or []) if att.client is not None else []):
        return _error(503, "not_attached", f"{node} is not attached as operator")
    svc = _service()
    if svc.running(node):
        return _error(409, "already_running", f"an experiment is already running on {node}")
    user, addr = who(), request.remote_addr
    store = state.store

    def audit(target: str, args: dict[str, Any]) -> int:
        return int(store.audit(user, addr, "kill", target, args, node=node))

    engine = Engine(att, exp, loop=state.manager.loop, audit=audit)
    try:
        aid = store.audit(user, addr, "chaos_start", engine.id, exp.to_dict(), node=node)
    except AuditError as exc:
        return _error(503, "audit_unavailable", str(exc))
    svc.start(engine)
    store.audit_result(aid, {"experiment": engine.id}, ok=True)
    resp = jsonify({"ok": True, "id": engine.id})
    resp.status_code = 202
    return resp


@blueprint.post("/api/chaos/experiments/<exp_id>/abort")
def api_abort(exp_id: str) -> Any:
    state = current_app.extensions["observer"]
    eng = _service().get(exp_id)
    if eng is None:
        return _error(404, "unknown_experiment", f"no running experiment {exp_id!r}")
    if not permitted("chaos"):
        return refuse("chaos_abort", "this login token does not allow chaos", node=eng.att.name, target=exp_id)
    try:
        aid = state.store.audit(who(), request.remote_addr, "chaos_abort", exp_id, {}, node=eng.att.name)
    except AuditError:
        aid = -1  # stopping is never refused for want of an audit row
    eng.abort(f"aborted by {who()}")
    state.store.audit_result(aid, {"aborted": True}, ok=True)
    return {"ok": True, "id": exp_id, "aborted_at": eng.journal.aborted_at}


def register(app: Flask) -> None:
    """Add the page and endpoints to ``app`` (after the observer state exists)."""
    app.extensions["chaos"] = ChaosService(app.extensions["observer"])
    app.register_blueprint(blueprint)

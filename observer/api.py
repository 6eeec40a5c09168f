"""The JSON twins of the pages and the operator actions (``/api/...``, see ``docs/web.md``).

Reads go to the node's :class:`observer.model.NodeModel` (the live picture)
and the :class:`observer.store.HistoryStore` (events, crashes, audit, time
travel); the inspector also asks the agent (``inspect``) through the
:class:`observer.attach.Attachment`. Actions (kill, suspend, resume, send)
are refused with 403 unless destructive actions are allowed -- the refusal
is audited too -- and otherwise go through :meth:`Attachment.run_audited`
(audit row before, result after).

Bad input gets a 4xx JSON error ``{"ok": false, "error": code, "message"}``,
never a 500 with a traceback.

Threading rules
    Request handlers run on the server's worker threads; the blocking
    attachment calls (``command``, ``run_audited``, ``kill_preview``) are
    allowed there (never on the attach loop thread).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from agent import protocol as P
from agent.client import AgentError

from .attach import E_NOT_CONNECTED, Attachment
from .model import NodeModel, tidy_layout
from .permissions import action_of, permitted, refuse
from .security import current_user
from .store import AuditError, StoreError

__all__ = ["ApiError", "register"]

log = logging.getLogger("observer.api")

ACTIONS = ("kill", "suspend", "resume", "send", "cancel")
"""``cancel`` is an asyncio node's kill (its agent offers no kill, suspend or send)."""
_AGENT_STATUS = {
    P.E_NO_SUCH_PROCESS: 404,
    P.E_BAD_ARGS: 400,
    P.E_NOT_PERMITTED: 403,
    P.E_TIMEOUT: 504,
    P.E_BUSY: 503,
    P.E_UNKNOWN_COMMAND: 400,  # e.g. suspend on an asyncio node
    E_NOT_CONNECTED: 503,
}


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx/5xx), ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _error(status: int, code: str, message: str) -> Response:
    resp = jsonify({"ok": False, "error": code, "message": message})
    resp.status_code = status
    return resp


def _state() -> Any:
    return current_app.extensions["observer"]


# -- input --------------------------------------------------------------------------------------


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name} must be an integer") from None
    if not lo <= v <= hi:
        raise ApiError(400, "bad_query", f"{name} must be between {lo} and {hi}")
    return v


def _float(name: str, *, required: bool = False) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(400, "bad_query", f"{name} is required")
        return None
    try:
        v = float(raw)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name} must be a number") from None
    if not math.isfinite(v):
        raise ApiError(400, "bad_query", f"{name} must be finite")
    return v


def _str(name: str, *, max_len: int = 200) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise ApiError(400, "bad_query", f"{name} is too long")
    return raw


def _list(name: str) -> list[str] | None:
    raw = _str(name, max_len=4000)
    return [x for x in (s.strip() for s in raw.split(",")) if x] if raw is not None else None


def _bool(name: str) -> bool:
    return (request.args.get(name) or "").lower() in ("1", "true", "yes", "on")


def _node(node: str) -> tuple[Attachment, NodeModel]:
    att = _state().attachment(node)
    if att is None:
        raise ApiError(404, "unknown_node", f"no node {node!r}")
    return att, att.model


def _pid(model: NodeModel, raw: str) -> str:
    """A pid in the picture: ``<0.42.0>``, ``0.42.0`` or a registered name."""
    if len(raw) > 200:
        raise ApiError(400, "bad_pid", "pid is too long")
    pid = raw if raw.startswith("<") else f"<{raw}>"
    if pid in model:
        return pid
    named = model.names().get(raw)
    if named is not None and named in model:
        return named
    for hit in model.search(raw, limit=20):  # names of restarted processes (spawn carries them)
        if hit["name"] == raw:
            return str(hit["pid"])
    raise ApiError(404, "unknown_pid", f"no process {raw!r} on {model.name}")


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    if data is None and request.get_data():
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return data


# -- reads --------------------------------------------------------------------------------------


def _historic_tree(procs: list[dict[str, Any]], names: dict[str, str], group_threshold: int) -> dict[str, Any]:
    """The nested tree (as the live ``/tree``) of a stored process table."""
    m = NodeModel("history")
    m.apply({"t": "snapshot_begin", "seq": 0, "count": len(procs), "node": {}})
    m.apply({"t": "snapshot_chunk", "seq": 0, "procs": procs})
    m.apply({"t": "snapshot_end", "seq": 0, "names": names})
    return m.tree(group_threshold=group_threshold)


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            code = (exc.name or "error").lower().replace(" ", "_")
            return _error(exc.code or 500, code, exc.description or code)
        return exc

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError) -> Response:
        log.error("observer: history store error on %s: %s", request.path, exc)
        return _error(503, "store_unavailable", "the history store cannot be read")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("observer: unexpected error on %s %s", request.method, request.path)
        return _error(500, "internal", "internal error (see the server log)")

    @app.get("/api/nodes")
    def api_nodes() -> Any:
        return {"nodes": [a.info() for a in _state().manager.list()]}

    @app.get("/api/overview")
    def api_overview() -> Any:
        since = _float("since")
        nodes, series = [], {}
        for att in _state().manager.list():
            nodes.append(att.model.summary() | {"attachment": att.info()})
            series[att.name] = att.model.series(since)
        return {"nodes": nodes, "series": series}

    @app.get("/api/nodes/<node>/tree")
    def api_tree(node: str) -> Any:
        _, model = _node(node)
        expanded = _list("expanded") or []
        tree = model.tree(group_threshold=_int("group_threshold", 20, 1, 1_000_000), expanded=expanded)
        out: dict[str, Any] = {"node": node, "tree": tree}
        if _int("layout", 1, 0, 1):  # the browser lays out itself: layout=0 skips the server's
            out["layout"] = tidy_layout(tree)
        return out

    @app.get("/api/nodes/<node>/search")
    def api_search(node: str) -> Any:
        _, model = _node(node)
        q = _str("q") or ""
        return {"node": node, "q": q, "matches": model.search(q, limit=_int("limit", 50, 1, 1000))}

    @app.get("/api/nodes/<node>/links/<pid>")
    def api_links(node: str, pid: str) -> Any:
        _, model = _node(node)
        p = _pid(model, pid)
        return {"node": node, "pid": p} | model.links(p)

    @app.get("/api/nodes/<node>/processes")
    def api_processes(node: str) -> Any:
        _, model = _node(node)
        try:
            page = model.processes(
                sort=_str("sort") or "pid",
                desc=_bool("desc"),
                filter_name=_str("q"),
                supervisor=_str("supervisor"),
                status=_str("status"),
                offset=_int("offset", 0, 0, 10_000_000),
                limit=_int("limit", 100, 1, 5000),
            )
        except ValueError as exc:
            raise ApiError(400, "bad_query", str(exc)) from None
        return {"node": node} | page

    @app.get("/api/nodes/<node>/processes/<pid>")
    def api_process(node: str, pid: str) -> Any:
        att, model = _node(node)
        p = _pid(model, pid)
        inspect: Any = None
        inspect_error: dict[str, Any] | None = None
        try:
            if not permitted("inspect"):
                raise AgentError(P.E_NOT_PERMITTED, "this login token does not allow inspect")
            inspect = att.command("inspect", timeout=5.0, pid=p, mailbox_limit=_int("mailbox", 10, 0, 100))
            if isinstance(inspect, dict):
                model.merge_info(p, inspect)
        except AgentError as exc:
            inspect_error = {"error": exc.code, "message": exc.message}
        record = model.process(p)
        if record is None:  # it exited meanwhile
            raise ApiError(404, "unknown_pid", f"process {p} exited")
        return {
            "node": node,
            "pid": p,
            "process": record,
            "restart_history": record.get("restart_history", []),
            "inspect": inspect,
            "inspect_error": inspect_error,
            "traces": model.traces(p),
        }

    @app.get("/api/nodes/<node>/processes/<pid>/kill_preview")
    def api_kill_preview(node: str, pid: str) -> Any:
        att, model = _node(node)
        p = _pid(model, pid)
        reason = _str("reason") or "kill"
        return {"node": node} | att.kill_preview(p, reason)

    @app.get("/api/events")
    def api_events() -> Any:
        store = _state().store
        node, q = _str("node"), _str("q")
        since, until = _float("since"), _float("until")
        limit = _int("limit", 200, 1, 5000)
        events = store.events(
            node=node, kinds=_list("kinds"), q=q, since=since, until=until, limit=limit, pid=_str("pid")
        )
        crashes = store.crashes(node=node, q=q, since=since, until=until, limit=min(limit, 200))
        return {"events": events, "crashes": crashes}

    @app.get("/api/nodes/<node>/timeline")
    def api_timeline(node: str) -> Any:
        state = _state()
        if state.attachment(node) is None and node not in state.store.nodes():
            raise ApiError(404, "unknown_node", f"no node {node!r}")
        return state.store.timeline(node, buckets=_int("buckets", 100, 1, 2000))

    @app.get("/api/nodes/<node>/tree_at")
    def api_tree_at(node: str) -> Any:
        state = _state()
        t = _float("t", required=True)
        assert t is not None
        if state.attachment(node) is None and node not in state.store.nodes():
            raise ApiError(404, "unknown_node", f"no node {node!r}")
        snap = state.store.tree_at(node, t)
        if snap is None:
            raise ApiError(404, "no_history", f"nothing stored for {node} at or before {t}")
        tree = _historic_tree(snap["procs"], snap["names"], _int("group_threshold", 20, 1, 1_000_000))
        return snap | {"tree": tree, **({"layout": tidy_layout(tree)} if _int("layout", 1, 0, 1) else {})}

    @app.get("/api/audit")
    def api_audit() -> Any:
        return {"audit": _state().store.audits(limit=_int("limit", 200, 1, 5000), node=_str("node"))}

    @app.post("/api/nodes/<node>/processes/<pid>/<action>")
    def api_action(node: str, pid: str, action: str) -> Any:
        if action not in ACTIONS:
            raise ApiError(404, "unknown_action", f"no action {action!r}; one of {', '.join(ACTIONS)}")
        body = _body()
        att, model = _node(node)
        p = _pid(model, pid)
        args = _action_args(action, p, body)
        return _run_action(att, action, args)


def _action_args(action: str, pid: str, body: dict[str, Any]) -> dict[str, Any]:
    if action == "kill":
        reason = body.get("reason", "kill")
        if not isinstance(reason, str) or not reason or len(reason) > 200:
            raise ApiError(400, "bad_args", "'reason' must be a short string")
        return {"pid": pid, "reason": reason}
    if action == "send":
        if "message" not in body:
            raise ApiError(400, "bad_args", "'message' is required (any JSON value)")
        return {"to": pid, "message": body["message"]}
    if action == "cancel":
        reason = body.get("reason", "cancelled by an operator")
        if not isinstance(reason, str) or not reason or len(reason) > 200:
            raise ApiError(400, "bad_args", "'reason' must be a short string")
        return {"pid": pid, "reason": reason}
    return {"pid": pid}


def _run_action(att: Attachment, action: str, args: dict[str, Any]) -> Any:
    state = _state()
    who, where = current_user(), request.remote_addr
    target = str(args.get("pid") or args.get("to"))
    if not permitted(action_of(action)):  # the login token's grant, checked on every request
        return refuse(action, f"this login token does not allow {action_of(action)}", node=att.name, target=target)
    if not state.allow_destructive:  # checked again on every request, whatever the page showed
        try:
            aid = state.store.audit(who, where, action, target, args, node=att.name)
            state.store.audit_result(aid, {"error": "destructive_actions_disabled"}, ok=False)
        except AuditError:
            log.error("observer: refused %s on %s and could not audit the refusal", action, target)
        return _error(403, "destructive_actions_disabled", "destructive actions are off on this server")
    try:
        result = att.run_audited(action, who=who, from_addr=where, **args)
    except AuditError as exc:
        return _error(503, "audit_unavailable", str(exc))
    except AgentError as exc:
        return _error(_AGENT_STATUS.get(exc.code, 502), exc.code, exc.message)
    return {"ok": True, "result": result}

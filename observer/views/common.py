"""What every Blueprint shares: the app's state, reading the query and the body,
finding a node and a process, rendering a page, and running a gated action.

Input helpers raise :class:`observer.errors.BadRequest` (``bad_query``,
``bad_json``, ``bad_args``) or :class:`observer.errors.NotFound`
(``unknown_node``, ``unknown_pid``); the app's one error handler turns them
into the JSON error shape.

Threading rules
    Request handlers only (they read ``flask.request`` and ``current_app``).
    :func:`run_gated` blocks on the attachment (allowed on request threads,
    never on the attach loop thread).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any, NoReturn

from flask import current_app, render_template, request, session
from markupsafe import Markup

from ..attach import Attachment
from ..errors import BadRequest, Forbidden, NotFound
from ..model import NodeModel
from ..permissions import DESTRUCTIVE, granted_actions, who
from ..store import AuditError

__all__ = [
    "arg_bool",
    "arg_float",
    "arg_int",
    "arg_list",
    "arg_str",
    "body",
    "find_node",
    "find_pid",
    "json_for_script",
    "page_config",
    "publish",
    "refuse",
    "render_page",
    "run_gated",
    "state",
]

log = logging.getLogger("observer.views")


def state() -> Any:
    """The app's :class:`observer.app.ObserverState`."""
    return current_app.extensions["observer"]


def publish(feed: str, payload: dict[str, Any]) -> None:
    """Push ``payload`` to the browsers following ``feed`` (:meth:`observer.live.LiveHub.publish`)."""
    hub = state().hub
    if hub is not None:
        hub.publish(feed, payload)


# -- input -----------------------------------------------------------------------------------------


def arg_int(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", code="bad_query") from None
    if not lo <= v <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}", code="bad_query")
    return v


def arg_float(name: str, *, required: bool = False) -> float | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        if required:
            raise BadRequest(f"{name} is required", code="bad_query")
        return None
    try:
        v = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number", code="bad_query") from None
    if not math.isfinite(v):
        raise BadRequest(f"{name} must be finite", code="bad_query")
    return v


def arg_str(name: str, *, max_len: int = 200) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_len:
        raise BadRequest(f"{name} is too long", code="bad_query")
    return raw


def arg_list(name: str) -> list[str] | None:
    raw = arg_str(name, max_len=4000)
    return [x for x in (s.strip() for s in raw.split(",")) if x] if raw is not None else None


def arg_bool(name: str) -> bool:
    return (request.args.get(name) or "").lower() in ("1", "true", "yes", "on")


def body() -> dict[str, Any]:
    """The request's JSON object (``{}`` for an empty body)."""
    data = request.get_json(silent=True)
    if data is None and request.get_data():
        raise BadRequest("the body must be a JSON object", code="bad_json")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", code="bad_json")
    return data


def find_node(node: str) -> tuple[Attachment, NodeModel]:
    att = state().attachment(node)
    if att is None:
        raise NotFound(f"no node {node!r}", code="unknown_node")
    return att, att.model


def find_pid(model: NodeModel, raw: str) -> str:
    """A pid in the picture: ``<0.42.0>``, ``0.42.0`` or a registered name."""
    if len(raw) > 200:
        raise BadRequest("pid is too long", code="bad_pid")
    pid = raw if raw.startswith("<") else f"<{raw}>"
    if pid in model:
        return pid
    named = model.names().get(raw)
    if named is not None and named in model:
        return named
    for hit in model.search(raw, limit=20):  # names of restarted processes (spawn carries them)
        if hit["name"] == raw:
            return str(hit["pid"])
    raise NotFound(f"no process {raw!r} on {model.name}", code="unknown_pid")


# -- pages -----------------------------------------------------------------------------------------


def json_for_script(obj: Any) -> Markup:
    """JSON that cannot close the ``<script>`` element it sits in."""
    text = json.dumps(obj, separators=(",", ":"), default=str)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def page_config(view: str, node: str | None = None, pid: str | None = None) -> dict[str, Any]:
    """The config embedded in every page (``docs/web.md``)."""
    st = state()
    actions = granted_actions()
    return {
        "csrf": session.get("csrf"),
        "allow_destructive": bool(st.allow_destructive) and bool(set(actions) & DESTRUCTIVE),
        "actions": actions,
        "role": session.get("role"),
        "nodes": st.nodes(),
        "node": node,
        "view": view,
        "pid": pid,
    }


def render_page(view: str, title: str, node: str | None = None, pid: str | None = None, **extra: Any) -> str:
    """Render ``web/templates/<view>.html`` with its config (404 for an unknown node)."""
    if node is not None and state().model(node) is None:
        raise NotFound(f"no node {node!r}", code="unknown_node")
    cfg = page_config(view, node, pid) | extra
    return render_template(
        f"{view}.html",
        page_config=cfg,
        config_json=json_for_script(cfg),
        view=view,
        node=node,
        pid=pid,
        title=title,
    )


# -- gated actions ---------------------------------------------------------------------------------


def refuse(
    action: str,
    reason: str,
    *,
    node: str | None = None,
    target: str | None = None,
    args: dict[str, Any] | None = None,
    code: str = "not_permitted",
) -> NoReturn:
    """Log and audit a refused attempt, then raise :class:`Forbidden` (403 ``code``)."""
    message = f"{action} refused: {reason}"
    log.warning("observer: %s (%s from %s, node %s, target %s)", message, who(), request.remote_addr, node, target)
    store = state().store
    try:
        aid = store.audit(who(), request.remote_addr, action, target, args or {}, node=node)
        store.audit_result(aid, {"error": code, "message": reason}, ok=False)
    except AuditError:
        log.error("observer: could not audit the refusal of %s", action)
    raise Forbidden(message, code=code)


def run_gated(att: Attachment, action: str, args: dict[str, Any], *, allowed: bool, refusal: str) -> dict[str, Any]:
    """Run a destructive agent command for the request. The login's grant
    (``allowed``; else refused with ``refusal``) and the server's
    ``--allow-destructive-actions`` are checked on every request, and a refusal
    is audited; then the audit row, the command, its result."""
    st = state()
    user, where = who(), request.remote_addr
    target = str(args.get("pid") or args.get("to"))
    if not allowed:
        refuse(action, refusal, node=att.name, target=target)
    if not st.allow_destructive:
        try:
            aid = st.store.audit(user, where, action, target, args, node=att.name)
            st.store.audit_result(aid, {"error": "destructive_actions_disabled"}, ok=False)
        except AuditError:
            log.error("observer: refused %s on %s and could not audit the refusal", action, target)
        raise Forbidden("destructive actions are off on this server", code="destructive_actions_disabled")
    result = att.run_audited(action, who=user, from_addr=where, **args)  # AuditError, AgentError: the handler
    return {"ok": True, "result": result}

"""Many nodes: every node's health in one list, and nodes added or removed at run time.

    GET    /api/cluster          every node's health, totals, and whether this login may manage nodes
    POST   /api/nodes            {"name", "address", "token"?, "tls"?}  attach a node (operator; audited)
    DELETE /api/nodes/<node>     detach one (operator; audited)

The cluster table lives on the overview page (:mod:`observer.views.pages`).
Adding or removing a node is pushed to the ``cluster`` feed of ``/live``;
health changes reach the browser in each node's batches and ``node_status``.
The token comes from the body, else from the server's agent tokens by name,
address or ``*``.

Threading rules
    Request handlers only; they call the attach manager's blocking methods
    (allowed on request threads, never on the attach loop).
"""

from __future__ import annotations

import ssl
from typing import Any

from flask import Blueprint, request

from agent import protocol as P

from ..attach import parse_address
from ..cluster import NAME_RE, TlsSettings, agent_ssl_context, cluster_health
from ..errors import BadRequest, Conflict, NotFound
from ..permissions import is_operator, who
from .common import body, publish, refuse, state

__all__ = ["blueprint"]

blueprint = Blueprint("cluster", __name__)


def cluster_view() -> dict[str, Any]:
    """``GET /api/cluster``'s answer (also pushed to the ``cluster`` feed)."""
    nodes = cluster_health(state())
    return {
        "nodes": nodes,
        "totals": {
            "nodes": len(nodes),
            "up": sum(1 for n in nodes if n["status"] == "up"),
            "processes": sum(n["process_count"] or 0 for n in nodes),
            "restart_rate": sum(n["restart_rate"] or 0 for n in nodes),
        },
    }


@blueprint.get("/api/cluster")
def api_cluster() -> Any:
    return cluster_view() | {"can_manage": is_operator()}


@blueprint.post("/api/nodes")
def api_add_node() -> Any:
    st = state()
    data = body()
    name, address = data.get("name") or data.get("address"), data.get("address")
    target = str(name)[:100] if name else None
    if not is_operator():
        refuse("add_node", "only operators may add nodes", node=target, args={"address": address})
    if not isinstance(address, str):
        raise BadRequest("'address' (HOST:PORT) is required", code="bad_args")
    try:
        parse_address(address)
    except ValueError as exc:
        raise BadRequest(str(exc), code="bad_args") from None
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest("'name' must be letters, digits and _.:@- (at most 100)", code="bad_args")
    if st.attachment(name) is not None:
        raise Conflict(f"a node named {name!r} is already attached", code="exists")
    token = data.get("token")
    if token is not None and (not isinstance(token, str) or not token.strip()):
        raise BadRequest("'token' must be a non-empty string", code="bad_args")
    tokens = st.config.agent_tokens
    token = token or tokens.get(name) or tokens.get(address) or tokens.get("*")
    if not token:
        raise BadRequest(f"no agent token for {name}: give 'token' or add it to the token file", code="no_token")
    ctx = None
    if data.get("tls"):
        try:
            ctx = agent_ssl_context(st.config.agent_tls or TlsSettings())
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise BadRequest(f"cannot set up TLS: {exc}", code="bad_tls") from None
    store = st.store
    aid = store.audit(who(), request.remote_addr, "add_node", address, {"tls": bool(ctx)}, node=name)
    role = P.ROLE_OPERATOR if st.allow_destructive else P.ROLE_READ
    try:
        att = st.manager.add(address, token.strip(), role, name=name, ssl_context=ctx)
    except (ValueError, RuntimeError) as exc:
        store.audit_result(aid, {"error": "failed", "message": str(exc)}, ok=False)
        raise Conflict(str(exc), code="failed") from None
    store.audit_result(aid, {"added": name}, ok=True)
    publish("cluster", {"added": name} | cluster_view())
    return {"ok": True, "node": att.info()}


@blueprint.delete("/api/nodes/<node>")
def api_remove_node(node: str) -> Any:
    st = state()
    if not is_operator():
        refuse("remove_node", "only operators may remove nodes", node=node)
    if st.attachment(node) is None:
        raise NotFound(f"no node {node!r}", code="unknown_node")
    aid = st.store.audit(who(), request.remote_addr, "remove_node", None, {}, node=node)
    removed = st.manager.remove(node)
    st.store.audit_result(aid, {"removed": removed}, ok=removed)
    publish("cluster", {"removed": node} | cluster_view())
    return {"ok": removed, "node": node}

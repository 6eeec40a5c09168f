"""History: the events page (crash log and time travel) and its JSON twins.

    GET /events                                 page
    GET /api/events[?node=&kinds=&q=&since=&until=&pid=&limit=]   stored events (and crashes), newest first
    GET /api/nodes/<node>/timeline[?buckets=]   exits, restarts and crashes per time bucket
    GET /api/nodes/<node>/tree_at?t=[&group_threshold=&expanded=&procs=&layout=]   the tree as it was at ``t``

Everything here reads the history store; a node that is no longer attached
still has its history.

Threading rules
    Request handlers; the store's query methods may be called from any thread.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..errors import NotFound
from ..model import tidy_layout
from .common import arg_float, arg_int, arg_list, arg_str, render_page, state

__all__ = ["blueprint"]

blueprint = Blueprint("history", __name__)


def _known(node: str) -> None:
    st = state()
    if st.attachment(node) is None and node not in st.store.nodes():
        raise NotFound(f"no node {node!r}", code="unknown_node")


@blueprint.get("/events")
def events_page() -> Any:
    return render_page("events", "Events")


@blueprint.get("/api/events")
def api_events() -> Any:
    store = state().store
    node, q = arg_str("node"), arg_str("q")
    since, until = arg_float("since"), arg_float("until")
    limit = arg_int("limit", 200, 1, 5000)
    events = store.events(
        node=node, kinds=arg_list("kinds"), q=q, since=since, until=until, limit=limit, pid=arg_str("pid")
    )
    crashes = store.crashes(node=node, q=q, since=since, until=until, limit=min(limit, 200))
    return {"events": events, "crashes": crashes}


@blueprint.get("/api/nodes/<node>/timeline")
def api_timeline(node: str) -> Any:
    _known(node)
    return state().store.timeline(node, buckets=arg_int("buckets", 100, 1, 2000))


@blueprint.get("/api/nodes/<node>/tree_at")
def api_tree_at(node: str) -> Any:
    t = arg_float("t", required=True)
    assert t is not None
    _known(node)
    threshold, expanded = arg_int("group_threshold", 20, 1, 1_000_000), arg_list("expanded") or []
    snap = state().store.tree_at(node, t, group_threshold=threshold, expanded=expanded)
    if snap is None:
        raise NotFound(f"nothing stored for {node} at or before {t}", code="no_history")
    if not arg_int("procs", 1, 0, 1):  # the browser draws the tree alone: the flat list is the tree again
        del snap["procs"]
    return snap | ({"layout": tidy_layout(snap["tree"])} if arg_int("layout", 1, 0, 1) else {})

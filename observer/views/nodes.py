"""One node's live picture: the tree, processes and inspector pages, their JSON
twins, and the operator actions on a process.

    GET  /nodes/<node>/tree              page; twin GET /api/nodes/<node>/tree
                                         [?expanded=&group_threshold=&fold=&layout=]
    GET  /nodes/<node>/processes         page; twin GET /api/nodes/<node>/processes
                                         [?sort=&desc=&q=&supervisor=&status=&offset=&limit=]
    GET  /nodes/<node>/processes/<pid>   page; twin GET /api/nodes/<node>/processes/<pid>[?mailbox=]
    GET  /api/nodes                              the attachments
    GET  /api/nodes/<node>/search?q=             processes by pid, name or label
    GET  /api/nodes/<node>/links/<pid>           links and monitors of one process
    GET  /api/nodes/<node>/processes/<pid>/kill_preview[?reason=]
    POST /api/nodes/<node>/processes/<pid>/{kill,suspend,resume,send}

Reads go to the node's model (the live picture); the inspector also asks the
agent (``inspect``). Actions are gated twice and audited (:func:`run_gated`).

Threading rules
    Request handlers; the blocking attachment calls are allowed on their threads.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from agent import protocol as P
from agent.client import AgentError

from ..errors import BadRequest, NotFound
from ..model import tidy_layout
from ..permissions import action_of, permitted
from .common import (
    arg_bool,
    arg_int,
    arg_list,
    arg_str,
    body,
    find_node,
    find_pid,
    render_page,
    run_gated,
    state,
)

__all__ = ["ACTIONS", "blueprint"]

blueprint = Blueprint("nodes", __name__)

ACTIONS = ("kill", "suspend", "resume", "send", "cancel")
"""``cancel`` is an asyncio node's kill (its agent offers no kill, suspend or send)."""


# -- pages -------------------------------------------------------------------------------------------


@blueprint.get("/nodes/<node>/tree")
def tree_page(node: str) -> Any:
    return render_page("tree", f"{node}: supervision tree", node)


@blueprint.get("/nodes/<node>/processes")
def processes_page(node: str) -> Any:
    return render_page("processes", f"{node}: processes", node)


@blueprint.get("/nodes/<node>/processes/<pid>")
def process_page(node: str, pid: str) -> Any:
    return render_page("process", f"{node}: {pid}", node, pid)


# -- JSON twins --------------------------------------------------------------------------------------


@blueprint.get("/api/nodes")
def api_nodes() -> Any:
    return {"nodes": [a.info() for a in state().manager.list()]}


@blueprint.get("/api/nodes/<node>/tree")
def api_tree(node: str) -> Any:
    _, model = find_node(node)
    expanded = arg_list("expanded") or []
    tree = model.tree(
        group_threshold=arg_int("group_threshold", 20, 1, 1_000_000),
        expanded=expanded,
        fold=arg_int("fold", 0, 0, 1_000_000),
    )
    out: dict[str, Any] = {"node": node, "tree": tree}
    if arg_int("layout", 1, 0, 1):  # the browser lays out itself: layout=0 skips the server's
        out["layout"] = tidy_layout(tree)
    return out


@blueprint.get("/api/nodes/<node>/search")
def api_search(node: str) -> Any:
    _, model = find_node(node)
    q = arg_str("q") or ""
    return {"node": node, "q": q, "matches": model.search(q, limit=arg_int("limit", 50, 1, 1000))}


@blueprint.get("/api/nodes/<node>/links/<pid>")
def api_links(node: str, pid: str) -> Any:
    _, model = find_node(node)
    p = find_pid(model, pid)
    return {"node": node, "pid": p} | model.links(p)


@blueprint.get("/api/nodes/<node>/processes")
def api_processes(node: str) -> Any:
    _, model = find_node(node)
    try:
        page = model.processes(
            sort=arg_str("sort") or "pid",
            desc=arg_bool("desc"),
            filter_name=arg_str("q"),
            supervisor=arg_str("supervisor"),
            status=arg_str("status"),
            offset=arg_int("offset", 0, 0, 10_000_000),
            limit=arg_int("limit", 100, 1, 5000),
        )
    except ValueError as exc:
        raise BadRequest(str(exc), code="bad_query") from None
    return {"node": node} | page


@blueprint.get("/api/nodes/<node>/processes/<pid>")
def api_process(node: str, pid: str) -> Any:
    att, model = find_node(node)
    p = find_pid(model, pid)
    inspect: Any = None
    inspect_error: dict[str, Any] | None = None
    try:
        if not permitted("inspect"):
            raise AgentError(P.E_NOT_PERMITTED, "this login token does not allow inspect")
        inspect = att.command("inspect", timeout=5.0, pid=p, mailbox_limit=arg_int("mailbox", 10, 0, 100))
        if isinstance(inspect, dict):
            model.merge_info(p, inspect)
    except AgentError as exc:  # the inspector still shows the model's record
        inspect_error = {"error": exc.code, "message": exc.message}
    record = model.process(p)
    if record is None:  # it exited meanwhile
        raise NotFound(f"process {p} exited", code="unknown_pid")
    return {
        "node": node,
        "pid": p,
        "process": record,
        "restart_history": record.get("restart_history", []),
        "inspect": inspect,
        "inspect_error": inspect_error,
        "traces": model.traces(p),
    }


@blueprint.get("/api/nodes/<node>/processes/<pid>/kill_preview")
def api_kill_preview(node: str, pid: str) -> Any:
    att, model = find_node(node)
    p = find_pid(model, pid)
    return {"node": node} | att.kill_preview(p, arg_str("reason") or "kill")


# -- actions -----------------------------------------------------------------------------------------


@blueprint.post("/api/nodes/<node>/processes/<pid>/<action>")
def api_action(node: str, pid: str, action: str) -> Any:
    if action not in ACTIONS:
        raise NotFound(f"no action {action!r}; one of {', '.join(ACTIONS)}", code="unknown_action")
    data = body()
    att, model = find_node(node)
    p = find_pid(model, pid)
    grant = action_of(action)
    return run_gated(
        att,
        action,
        _action_args(action, p, data),
        allowed=permitted(grant),
        refusal=f"this login token does not allow {grant}",
    )


def _action_args(action: str, pid: str, data: dict[str, Any]) -> dict[str, Any]:
    if action == "kill":
        reason = data.get("reason", "kill")
        if not isinstance(reason, str) or not reason or len(reason) > 200:
            raise BadRequest("'reason' must be a short string", code="bad_args")
        return {"pid": pid, "reason": reason}
    if action == "send":
        if "message" not in data:
            raise BadRequest("'message' is required (any JSON value)", code="bad_args")
        return {"to": pid, "message": data["message"]}
    if action == "cancel":
        reason = data.get("reason", "cancelled by an operator")
        if not isinstance(reason, str) or not reason or len(reason) > 200:
            raise BadRequest("'reason' must be a short string", code="bad_args")
        return {"pid": pid, "reason": reason}
    return {"pid": pid}

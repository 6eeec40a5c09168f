"""The supervision forest as one nested dict, grouped for drawing, and its tidy layout.

:func:`build_tree` is what both the live ``/tree`` and time travel's
``/tree_at`` draw (the same grouping rules); :func:`tidy_layout` places it.
Both are pure functions (the facade calls :func:`build_tree` under its lock;
:func:`tidy_layout` works on a tree copy and needs no lock).
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from .queries import GraphView
from .records import Proc
from .state import State, pid_key

__all__ = ["FOLD_ABOVE", "build_tree", "tidy_layout"]

FOLD_ABOVE = 2000
"""``fold`` applies to trees of more processes than this (a small tree is sent whole)."""


def build_tree(
    state: State, name: str, *, group_threshold: int = 20, expanded: Collection[str] = (), fold: int = 0
) -> dict[str, Any]:
    """The supervision forest of ``state`` under a synthetic ``node`` root.

    Each process is ``{"id": pid, "pid", "name", "label", "kind", "status",
    "mailbox", "restarts", "rate", "child_id", "budget", "children": [...]}``.
    Under one supervisor (or at the top level), ``group_threshold`` or more
    children with the same label become one group node ``{"id": key, "key":
    key, "group": True, "label", "count", "mailbox_total", "mailbox_max",
    "restarts_total", "rate_total", "status_counts", "supervisor", "sample":
    [first pids]}`` unless ``key`` (``"<sup pid>/<label>"``, or
    ``"root/<label>"`` at the top) is in ``expanded``; the members of an
    expanded group carry its ``group_key``. The top node is ``{"id": "node",
    "node": True, "label", "name", "status", "stale", "children": [...]}``;
    ``stale`` is True while the node is not up (the last-known tree).

    ``fold`` (0: never) folds, in a tree of more than :data:`FOLD_ABOVE`
    processes, every supervisor whose ``fold`` or more children are all
    leaves, unless its pid is in ``expanded``: it is sent without its
    children, with ``"folded": n`` (how many) and their ``folded_status_counts``,
    ``folded_mailbox_total`` and ``folded_restarts_total``. A node of 1,000
    supervisors of 100 workers is then 1,002 items (~0.3 MB of JSON) instead of
    101,002 (~20 MB); the browser asks for a folded supervisor's children by
    putting its pid in ``expanded``.
    """
    exp = set(expanded)
    view = GraphView(state)
    if fold > 0 and len(view) <= FOLD_ABOVE:
        fold = 0
    roots = sorted(view.roots(), key=pid_key)
    top: dict[str, Any] = {
        "id": "node",
        "node": True,
        "label": state.node_meta.get("node_id") or name,
        "name": name,
        "status": state.status,
        "stale": state.status != "up",
        "children": [],
    }
    work: list[tuple[dict[str, Any], str | None, list[str]]] = [(top, None, roots)]
    while work:
        parent_dict, sup, kids = work.pop()
        out = parent_dict["children"]
        labels: dict[str, list[str]] = {}
        for p in kids:
            labels.setdefault(str(view.record(p).get("label")), []).append(p)
        grouped = {lb: ps for lb, ps in labels.items() if len(ps) >= group_threshold}
        emitted: set[str] = set()
        for p in kids:
            rec = view.record(p)
            lb = str(rec.get("label"))
            if lb in grouped:
                key = f"{sup or 'root'}/{lb}"
                if key not in exp:
                    if lb not in emitted:
                        emitted.add(lb)
                        out.append(_group(view, key, sup, rec.get("label"), grouped[lb]))
                    continue
            d = _tree_node(p, rec)
            if lb in grouped:
                d["group_key"] = f"{sup or 'root'}/{lb}"
            out.append(d)
            if view.has_children(p):
                if fold and p not in exp:
                    leaves = view.children(p, ordered=False)  # (no need to sort what is not sent)
                    if len(leaves) >= fold and not any(map(view.has_children, leaves)):
                        _fold(view, d, leaves)
                        continue
                work.append((d, p, view.children(p)))
    return top


_status_of, _mailbox_of, _restarts_of = (operator.attrgetter(f) for f in ("status", "mailbox", "restarts"))


def _fold(view: GraphView, d: dict[str, Any], kids: list[str]) -> None:
    """``d`` (a supervisor of leaves) sent folded: how many children, and their summary
    (C-level over the slotted records: a million-process tree folds 10,000 of these)."""
    recs = list(map(view.record, kids))
    if all(type(r) is Proc for r in recs):  # type: ignore[comparison-overlap]
        statuses: list[Any] = list(map(_status_of, recs))
        mailbox = sum(filter(None, map(_mailbox_of, recs)))
        restarts = sum(filter(None, map(_restarts_of, recs)))
    else:
        statuses = [r.get("status") for r in recs]
        mailbox = sum(r.get("mailbox") or 0 for r in recs)
        restarts = sum(r.get("restarts") or 0 for r in recs)
    status_counts: dict[str, int] = {}
    for st, n in Counter(statuses).items():
        key = st or "?"
        status_counts[key] = status_counts.get(key, 0) + n
    d["folded"] = len(kids)
    d["folded_status_counts"] = status_counts
    d["folded_mailbox_total"] = mailbox
    d["folded_restarts_total"] = restarts


_NODE_FIELDS = ("name", "label", "kind", "status", "mailbox", "restarts", "rate", "child_id", "budget")
_node_fields = operator.attrgetter(*_NODE_FIELDS)


def _tree_node(pid: str, rec: Mapping[str, Any]) -> dict[str, Any]:
    if type(rec) is Proc:  # type: ignore[comparison-overlap]  # one C call for the nine fields (a 100,000-process tree: ~0.6 s less)
        d = dict(zip(_NODE_FIELDS, _node_fields(rec), strict=True))
        d["id"] = d["pid"] = pid
        d["children"] = []
        return d
    return {
        "id": pid,
        "pid": pid,
        "name": rec.get("name"),
        "label": rec.get("label"),
        "kind": rec.get("kind"),
        "status": rec.get("status"),
        "mailbox": rec.get("mailbox"),
        "restarts": rec.get("restarts"),
        "rate": rec.get("rate"),
        "child_id": rec.get("child_id"),
        "budget": rec.get("budget"),
        "children": [],
    }


def _group(view: GraphView, key: str, sup: str | None, label: Any, pids: list[str]) -> dict[str, Any]:
    status_counts: dict[str, int] = {}
    mailbox = restarts = mailbox_max = 0
    rate = 0.0
    for p in pids:
        r = view.record(p)
        st = r.get("status") or "?"
        status_counts[st] = status_counts.get(st, 0) + 1
        mb = r.get("mailbox") or 0
        mailbox += mb
        mailbox_max = max(mailbox_max, mb)
        restarts += r.get("restarts") or 0
        rate += r.get("rate") or 0.0
    return {
        "id": key,
        "key": key,
        "group": True,
        "label": label,
        "supervisor": sup,
        "count": len(pids),
        "mailbox_total": mailbox,
        "mailbox_max": mailbox_max,
        "restarts_total": restarts,
        "rate_total": round(rate, 3),
        "status_counts": status_counts,
        "sample": pids[:5],
        "children": [],
    }


def tidy_layout(tree: dict[str, Any], *, dx: float = 1.0, dy: float = 1.0) -> dict[str, Any]:
    """Positions for a tree from :func:`build_tree`: leaves left to right in
    order one ``dx`` apart, every parent centred over its first and last child,
    ``y = depth * dy``. Linear time and iterative (no recursion limit).

    Nodes at the same depth never overlap: their subtrees cover disjoint leaf
    ranges, so they are at least ``dx`` apart. Returns ``{"nodes": {id: {"x",
    "y"}}, "width", "height"}``.
    """
    pos: dict[str, dict[str, float]] = {}
    next_leaf = 0
    max_depth = 0
    stack: list[tuple[dict[str, Any], int, bool]] = [(tree, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        kids = node.get("children") or []
        if depth > max_depth:
            max_depth = depth
        if not kids:
            pos[str(node["id"])] = {"x": next_leaf * dx, "y": depth * dy}
            next_leaf += 1
        elif not done:
            stack.append((node, depth, True))
            for k in reversed(kids):
                stack.append((k, depth + 1, False))
        else:
            first = pos[str(kids[0]["id"])]["x"]
            last = pos[str(kids[-1]["id"])]["x"]
            pos[str(node["id"])] = {"x": (first + last) / 2, "y": depth * dy}
    return {"nodes": pos, "width": max(0, next_leaf - 1) * dx, "height": max_depth * dy}

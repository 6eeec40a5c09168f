"""Read-only questions about a :class:`State`: the process table, one process, search, summary.

Functions of the state (and of ``now`` where time matters); they never change
it and return copies (plain, JSON-able dicts and lists). The facade calls them
under its lock. :class:`GraphView` is the read-only view of the graph other
modules reason over (the kill preview, the tree).
"""

from __future__ import annotations

import heapq
import operator
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .order import Order, page_pids
from .records import Proc
from .state import State, linked, pid_key

__all__ = ["SORT_KEYS", "GraphView", "aggregates", "process", "processes", "search", "series", "summary"]

SORT_KEYS = (
    "mailbox",
    "rate",
    "handler_time",
    "memory",
    "restarts",
    "name",
    "pid",
    "label",
    "status",
    "msgs_in",
    "msgs_out",
    "handled",
    "started_at",
)
"""Columns :func:`processes` can sort by."""

_ROW_FIELDS = (
    "pid",
    "name",
    "label",
    "kind",
    "status",
    "supervisor",
    "child_id",
    "restarts",
    "mailbox",
    "rate",
    "msgs_in",
    "msgs_out",
    "handled",
    "handler_time",
    "memory",
    "trap_exit",
    "started_at",
)
_BIG = 1 << 40


class GraphView:
    """A read-only view of one state's processes and relations, as of ``now``
    (which only :meth:`budget` reads).

    Records are the graph's own dicts, typed as read-only :class:`Mapping`:
    never change them. Valid while the caller holds the facade's lock.
    """

    __slots__ = ("_cid_order", "_g", "_now", "_sup_restarts")

    def __init__(self, state: State, now: float = 0.0) -> None:
        self._g = state.graph
        self._cid_order = state.cid_order
        self._sup_restarts = state.sup_restarts
        self._now = now

    def __contains__(self, pid: object) -> bool:
        return pid in self._g._node

    def __len__(self) -> int:
        return len(self._g._node)

    def pids(self) -> Iterable[str]:
        """Every pid, in graph order."""
        return self._g._node.keys()

    def items(self) -> Iterable[tuple[str, Mapping[str, Any]]]:
        """Every (pid, record), in graph order."""
        items: Iterable[tuple[str, Mapping[str, Any]]] = self._g._node.items()
        return items

    def record(self, pid: str) -> Mapping[str, Any]:
        """The record of ``pid`` (KeyError if it is not in the picture)."""
        rec: Mapping[str, Any] = self._g._node[pid]
        return rec

    def supervisor_of(self, pid: str) -> str | None:
        """Its supervisor, if that is in the picture."""
        s = self._g._node[pid].get("supervisor")
        return s if s and s in self._g._node else None

    def has_children(self, pid: str) -> bool:
        for d in self._g._succ[pid].values():  # noqa: SIM110 -- a loop: any(genexpr) costs ~3x, per process
            if "sup" in d:
                return True
        return False

    def roots(self) -> list[str]:
        """Every pid nobody in the picture supervises (see :meth:`is_root`), in graph order."""
        supervised = {v for nbrs in self._g._succ.values() for v, d in nbrs.items() if "sup" in d}
        return [p for p in self._g._node if p not in supervised]

    def is_root(self, pid: str) -> bool:
        """Nobody in the picture supervises it."""
        for d in self._g._pred[pid].values():  # noqa: SIM110 -- as has_children
            if "sup" in d:
                return False
        return True

    def children(self, sup: str, *, ordered: bool = True) -> list[str]:
        """Supervised children of ``sup`` in start (child spec) order (``ordered=False``: in graph order)."""
        g = self._g
        kids = [v for v, d in g._succ[sup].items() if "sup" in d]
        if ordered and len(kids) > 1:
            order = self._cid_order.get(sup, {})
            nodes = g._node
            get = order.get
            kids.sort(key=lambda p: (get(nodes[p]["child_id"], _BIG), pid_key(p)))
        return kids

    def descendants(self, pid: str) -> list[str]:
        """Its whole subtree (depth first, children in start order), without itself."""
        out: list[str] = []
        stack = [pid]
        while stack:
            kids = self.children(stack.pop())
            out.extend(kids)
            stack.extend(reversed(kids))
        return out

    def links_of(self, pid: str) -> list[str]:
        """Whom an exit of ``pid`` reaches: its links, children and supervisor."""
        g = self._g
        succ = g._succ[pid]
        out = [v for v, d in succ.items() if d.get("link") or d.get("sup")]
        out += [u for u, d in g._pred[pid].items() if d.get("sup") and not succ.get(u, {}).get("link")]
        return out

    def path(self, pid: str) -> list[str]:
        """Supervisor chain from the root down to ``pid`` (inclusive); [] if unknown."""
        nodes = self._g._node
        if pid not in nodes:
            return []
        path = [pid]
        seen = {pid}
        cur = pid
        while True:
            sup = nodes[cur].get("supervisor")
            if not sup or sup not in nodes or sup in seen:
                break
            path.append(sup)
            seen.add(sup)
            cur = sup
        path.reverse()
        return path

    def budget(self, sup: str) -> dict[str, Any] | None:
        """The supervisor's restart budget estimate now: ``{"used", "intensity", "period", "strategy"}``."""
        rec = self._g._node.get(sup)
        b = rec.get("budget") if rec else None
        if not isinstance(b, dict):
            return None
        period = float(b.get("period") or 5.0)
        used = sum(1 for t in self._sup_restarts.get(sup, ()) if self._now - t <= period)
        return {"used": used, "intensity": b.get("intensity"), "period": period, "strategy": b.get("strategy")}


# -- node -------------------------------------------------------------------------------------------


_status_of, _kind_of, _mailbox_of = (operator.attrgetter(f) for f in ("status", "kind", "mailbox"))


def aggregates(state: State) -> tuple[dict[str, int], dict[str, int], int]:
    """Counts by status and by kind, and the mailbox total (a walk over every process:
    C-level over the slotted records, ~60 ns a process; 20 nodes of 50,000 ask every second)."""
    recs = state.graph._node.values()
    try:
        by_status = Counter(map(_status_of, recs))
        by_kind = Counter(map(_kind_of, recs))
        mailbox_total = sum(filter(None, map(_mailbox_of, recs)))
    except AttributeError:  # a plain dict among the records (a graph built by hand): one by one
        pass
    else:
        for counts, missing in ((by_status, "?"), (by_kind, "worker")):
            for falsy in [k for k in counts if not k]:
                counts[missing] += counts.pop(falsy)
        return dict(by_status), dict(by_kind), int(mailbox_total)
    by_status_d: dict[str, int] = {}
    by_kind_d: dict[str, int] = {}
    total = 0
    for rec in recs:
        st = rec.get("status") or "?"
        by_status_d[st] = by_status_d.get(st, 0) + 1
        k = rec.get("kind") or "worker"
        by_kind_d[k] = by_kind_d.get(k, 0) + 1
        total += rec.get("mailbox") or 0
    return by_status_d, by_kind_d, total


def summary(state: State, name: str, agg: tuple[dict[str, int], dict[str, int], int]) -> dict[str, Any]:
    """Health and counts (``agg``: :func:`aggregates`, which the facade caches a little while)."""
    by_status, by_kind, mailbox_total = agg
    r = state.rates
    mr = r.series["message_rate"]
    rr = r.series["restart_rate"]
    top = r.series["top_mailboxes"]
    return {
        "name": name,
        "status": state.status,
        "up": state.status == "up",
        "reason": state.status_reason,
        "node": dict(state.node_meta),
        "last_seen": state.last_seen,
        "connected_at": state.connected_at,
        "down_since": state.down_since,
        "process_count": state.graph.number_of_nodes(),
        "supervisor_count": by_kind.get("supervisor", 0),
        "status_counts": dict(by_status),
        "kind_counts": dict(by_kind),
        "mailbox_total": mailbox_total,
        "loop_lag_ms": r.stats.get("loop_lag_ms"),
        "blocked": dict(state.blocked) if state.blocked else None,
        "message_rate": mr[-1][1] if mr else None,
        "restart_rate": rr[-1][1] if rr else None,
        "time": r.sample_time,
        "top_mailboxes": [list(x) for x in top[-1][1]] if top else [],
        "restarts": r.stats.get("restarts"),
        "crashes": r.stats.get("crashes"),
        "seq": state.seq,
        "snapshots": state.snapshots,
        "gaps": state.gaps,
        "events_dropped": state.dropped,
        "agent_events_dropped": r.stats.get("events_dropped"),
        "last_error": state.last_error,
        "gave_up": list(state.gave_up)[-10:],
        # an asyncio node's own figures (docs/asyncio.md); None for an actors node
        "tasks": r.stats.get("tasks"),
        "tasks_created_per_s": r.stats.get("tasks_created_per_s"),
        "tasks_finished_per_s": r.stats.get("tasks_finished_per_s"),
    }


def series(state: State, since: float | None = None) -> dict[str, list[list[Any]]]:
    """Node time series: ``{name: [[t, value], ...]}`` (points after ``since``)."""
    return {k: [list(p) for p in q if since is None or p[0] > since] for k, q in state.rates.series.items()}


# -- processes --------------------------------------------------------------------------------------


def _sort_key(sort: str) -> Any:
    if sort == "pid":
        return lambda r: pid_key(r["pid"])
    if sort == "name":
        return lambda r: ((r.get("name") or r.get("label") or "").lower(), pid_key(r["pid"]))
    if sort in ("label", "status"):
        return lambda r: (str(r.get(sort) or "").lower(), pid_key(r["pid"]))
    return lambda r: r.get(sort) or 0


def processes(
    state: State,
    *,
    sort: str = "pid",
    desc: bool = False,
    filter_name: str | None = None,
    supervisor: str | None = None,
    status: str | None = None,
    offset: int = 0,
    limit: int = 100,
    order: Order | None = None,
) -> dict[str, Any]:
    """One page of the process table (see :meth:`NodeModel.processes`); with no filter,
    ``order`` (of ``sort``, from :func:`~observer.model.order.compute_order`) gives the rows."""
    if sort not in SORT_KEYS:
        raise ValueError(f"cannot sort by {sort!r}; one of {', '.join(SORT_KEYS)}")
    if order is not None and order.sort == sort and filter_name is None and supervisor is None and status is None:
        nodes = state.graph._node
        page: list[Any] = []
        if limit > 0:
            for pid in page_pids(order, desc, offset):
                rec = nodes.get(pid)
                if rec is not None:  # exited since the order was computed
                    page.append(rec)
                    if len(page) >= limit:
                        break
        rows = [{k: r.get(k) for k in _ROW_FIELDS} for r in page]
        return {"total": len(nodes), "rows": rows, "offset": offset, "limit": limit, "sort": sort, "desc": desc}
    needle = filter_name.lower() if filter_name else None
    recs: list[dict[str, Any]] = []
    for pid, rec in state.graph._node.items():
        if supervisor is not None and rec.get("supervisor") != supervisor:
            continue
        if status is not None and rec.get("status") != status:
            continue
        if needle is not None and not (
            needle in pid or needle in (rec.get("name") or "").lower() or needle in (rec.get("label") or "").lower()
        ):
            continue
        recs.append(rec)
    total = len(recs)
    key = _sort_key(sort)
    if sort == "memory":
        known = [r for r in recs if r.get(sort) is not None]
        unknown = [r for r in recs if r.get(sort) is None]
        known.sort(key=key, reverse=desc)
        unknown.sort(key=_sort_key("pid"))
        recs = known + unknown
    else:
        recs.sort(key=key, reverse=desc)
    page = recs[max(0, offset) : max(0, offset) + max(0, limit)]
    rows = [{k: r.get(k) for k in _ROW_FIELDS} for r in page]
    return {"total": total, "rows": rows, "offset": offset, "limit": limit, "sort": sort, "desc": desc}


def process(state: State, view: GraphView, pid: str) -> dict[str, Any] | None:
    """Everything known about one process (see :meth:`NodeModel.process`)."""
    g = state.graph
    rec = g._node.get(pid)
    if rec is None:
        return None
    out = dict(rec)
    out["links"] = sorted(linked(g, pid), key=pid_key)
    out["monitors"] = sorted((v for v, d in g._succ[pid].items() if d.get("monitor")), key=pid_key)
    out["monitored_by"] = sorted((u for u, d in g._pred[pid].items() if d.get("monitor")), key=pid_key)
    out["children"] = view.children(pid)
    out["restart_history"] = list(state.restart_hist.get(pid, ()))
    out["path"] = view.path(pid)
    if rec.get("kind") == "supervisor":
        out["budget_now"] = view.budget(pid)
    return out


def links(state: State, pid: str) -> dict[str, Any]:
    """Links and monitors of ``pid`` as edges (see :meth:`NodeModel.links`)."""
    g = state.graph
    if pid not in g:
        return {"links": [], "monitors": []}
    ls = [[pid, v] for v in linked(g, pid)]
    mons = [[pid, v] for v, d in g._succ[pid].items() if d.get("monitor")]
    mons += [[u, pid] for u, d in g._pred[pid].items() if d.get("monitor")]
    return {"links": ls, "monitors": mons}


_SEARCHED = ("name", "label", "child_id")
_search_fields = operator.attrgetter(*_SEARCHED)


def search(view: GraphView, q: str, limit: int = 50) -> list[dict[str, Any]]:
    """Processes whose pid, name, label or child id contains ``q``, each with its path to the root."""
    needle = q.strip().lower()
    if not needle:
        return []
    hits = []
    lowered: dict[Any, str] = {}  # names, labels and child ids repeat: each lowered once
    for pid, rec in view.items():
        if needle in pid:
            hits.append(pid)
            continue
        fields = _search_fields(rec) if type(rec) is Proc else (rec.get(k) for k in _SEARCHED)  # type: ignore[comparison-overlap]
        for v in fields:
            if v is None:
                continue
            if v.__class__ is str:
                low = lowered.get(v)
                if low is None:
                    low = lowered[v] = v.lower()
            else:
                low = str(v).lower()
            if needle in low:
                hits.append(pid)
                break
    # the first `limit` (named first, then by pid) without sorting every hit: "worker" matches 100,000
    first = heapq.nsmallest(limit, hits, key=lambda p: (view.record(p).get("name") is None, pid_key(p)))
    out = []
    for pid in first:
        rec = view.record(pid)
        out.append(
            {
                "pid": pid,
                "name": rec.get("name"),
                "label": rec.get("label"),
                "kind": rec.get("kind"),
                "path": view.path(pid),
            }
        )
    return out

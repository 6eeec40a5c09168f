"""Snapshots: a full picture from the agent replaces the graph (the reducer's ``snapshot_end``)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import operator
import sys
from collections import deque
from collections.abc import Iterator
from typing import Any

import networkx as nx

from . import rates
from .records import FIELDS, Proc, ProcGraph, edge_flags
from .state import DEFAULTS, Change, State, pid_key

__all__ = [
    "FREEZE_AT",
    "Prepared",
    "build_graph",
    "freeze_long_lived",
    "no_gc",
    "normalize",
    "prepare",
    "replace_picture",
]

FREEZE_AT = 5000
"""Processes in a fresh snapshot past which the collector forgets the heap (:func:`freeze_long_lived`)."""


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic collector off for a while: building 100,000 fresh (acyclic) dicts
    would trigger many full collections, each walking the whole heap."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def freeze_long_lived(processes: int, *, collect: bool = True) -> bool:
    """After a snapshot of ``processes`` was built (the live model's or the history writer's
    graph): if it is big (:data:`FREEZE_AT`), collect once and put everything out of the
    collector's sight (:func:`gc.freeze`), so that later full collections, which walked all
    of it, see only what is new. Without it, a million processes just attached (two graphs of
    them: live and history) cost full collections of 0.2-0.4 s each, every few seconds, on
    whichever thread allocated last: an update waits for them. ``collect=False``: freeze without
    the collection first (itself a walk of everything not yet frozen: 0.1-0.4 s of the GIL),
    when one ran a moment ago (the attach collects after building the same snapshot's live
    graph). Returns whether it froze."""
    if processes < FREEZE_AT:
        return False
    if collect:
        gc.collect()
    gc.freeze()
    return True


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    """A process record with every key of :data:`~observer.model.state.DEFAULTS` (links and monitors are edges)."""
    rec = dict(DEFAULTS)
    rec.update(raw)
    rec.pop("links", None)
    rec.pop("monitors", None)
    rec["pid"] = sys.intern(str(rec["pid"]))  # the graph's key and the record's pid: one string
    if rec["trap_exit"] is None:
        # spawn events do not carry trap_exit: supervisors always trap, others unknown
        rec["trap_exit"] = True if rec["kind"] == "supervisor" else None
    rec["rate"] = 0.0
    return rec


Prepared = tuple[str, Proc, tuple[str, ...], tuple[str, ...]]
"""A snapshot record made compact on arrival: (pid, record, links, monitors)."""


def prepare(raw: dict[str, Any]) -> Prepared:
    """A snapshot record as it will be kept: done as each chunk arrives, so that a
    100,000-record snapshot is not held as 100,000 wire dicts (~1.5 KB each) until its end.
    The record :func:`normalize` describes, its fields set in one call (:func:`_fill`) rather
    than key by key through :meth:`Proc.__setitem__`: half the instructions, and the attach
    and the history writer each do it for every process of every snapshot (a million, twice,
    when an observer attaches to twenty 50,000-process nodes)."""
    rec = Proc()
    _fill(rec, *_wire_values({**DEFAULTS, **raw}))
    if not _WIRE_KEYS.issuperset(raw):
        for k, v in raw.items():
            if k not in _WIRE_KEYS:
                rec[k] = v  # an extra key
    ls, ms = raw.get("links"), raw.get("monitors")
    links = tuple(map(_intern, map(str, ls))) if ls else ()
    mons = tuple(map(_intern, map(str, ms))) if ms else ()
    return rec["pid"], rec, links, mons


_intern = sys.intern
_ZERO = 0.0
_wire_values = operator.itemgetter(*FIELDS)
_WIRE_KEYS = frozenset((*FIELDS, "links", "monitors"))
"""A wire record's keys that are not extra keys of its :class:`Proc`."""


def _s(v: Any) -> Any:
    return _intern(v) if v.__class__ is str else v


def _z(v: Any) -> Any:
    return _ZERO if v.__class__ is float and v == 0.0 else v


def _fill(  # one argument per field: FIELDS, in order
    r: Any,
    pid: Any,
    name: Any,
    label: Any,
    kind: Any,
    status: Any,
    supervisor: Any,
    parent: Any,
    child_id: Any,
    restarts: Any,
    mailbox: Any,
    msgs_in: Any,
    msgs_out: Any,
    handled: Any,
    handler_time: Any,
    trap_exit: Any,
    started_at: Any,
    budget: Any,
    memory: Any,
    rate: Any,
) -> None:
    """Every field of the fresh record ``r`` as :meth:`Proc.__setitem__` and :func:`normalize`
    would leave it: strings interned, a float zero the shared one, the pid a string, an unknown
    ``trap_exit`` true for a supervisor, the rate zero (samples bring it)."""
    r.pid = _intern(str(pid))  # the graph's key and the record's pid: one string
    r.name = _s(name)
    r.label = _s(label)
    r.kind = _s(kind)
    r.status = _s(status)
    r.supervisor = _s(supervisor)
    r.parent = _s(parent)
    r.child_id = _s(child_id)
    r.restarts = restarts
    r.mailbox = mailbox
    r.msgs_in = msgs_in
    r.msgs_out = msgs_out
    r.handled = handled
    r.handler_time = _z(handler_time)
    r.trap_exit = (True if kind == "supervisor" else None) if trap_exit is None else trap_exit
    r.started_at = _z(started_at)
    r.budget = budget
    r.memory = _z(memory)
    r.rate = _ZERO
    r._extra = None  # set: read in one step (unset, it is a call of Proc.__getattr__)


def build_graph(procs: list[Prepared] | list[dict[str, Any]]) -> nx.DiGraph:
    """The graph of a snapshot's records, raw or :func:`prepare`-d (nodes in pid order;
    edges of supervisors, links, monitors)."""
    with no_gc():
        g = ProcGraph()
        items = [p if isinstance(p, tuple) else prepare(p) for p in procs]
        items.sort(key=lambda it: pid_key(it[0]))
        nodes, succ, pred = g._node, g._succ, g._pred
        for pid, rec, _, _ in items:
            if pid not in nodes:
                succ[pid], pred[pid] = {}, {}
            nodes[pid] = rec  # a repeated pid: the last record wins
        _add_edges(g, items)
    return g


def _add_edges(g: nx.DiGraph, items: list[Prepared]) -> None:
    """The edges of a snapshot: supervisors (each record's ``supervisor``), then links, then
    monitors, as :func:`~observer.model.state.add_flag` and :func:`~observer.model.state.link_pair`
    one by one would leave them (a pair's link on its sup edge, else both ways; edges in the
    order they would be added), worked out first and set in one pass: a 50,000-process snapshot
    has ~150,000 relations, and the attach and the history writer each build every snapshot."""
    nodes, succ, pred = g._node, g._succ, g._pred
    rel: dict[tuple[str, str], list[Any]] = {}  # (u, v) -> [sup, link, monitors], in creation order
    for pid, rec in nodes.items():
        sup = rec.get("supervisor")
        if sup and sup in nodes:
            rel[(sup, pid)] = [True, False, 0]
    get = rel.get
    for a, _, ls, _ in items:
        for b in ls:
            if b not in nodes or a == b:
                continue
            there = get((a, b))
            if there is not None and there[0]:
                there[1] = True
                continue
            back = get((b, a))
            if back is not None and back[0]:
                back[1] = True
                continue
            for u, v in ((a, b), (b, a)):
                r = get((u, v))
                if r is None:
                    rel[(u, v)] = [False, True, 0]
                else:
                    r[1] = True
    for w, _, _, ms in items:
        for tgt in ms:
            if tgt in nodes:
                r = get((w, tgt))
                if r is None:
                    rel[(w, tgt)] = [False, False, 1]
                else:
                    r[2] += 1
    for (u, v), (s, ln, m) in rel.items():
        succ[u][v] = pred[v][u] = edge_flags(s, ln, m)


def replace_picture(state: State, msg: dict[str, Any], now: float) -> tuple[State, list[Change]]:
    """``snapshot_end``: a new state holding the snapshot received since ``snapshot_begin``.

    ``state`` is only read, never changed (the facade runs this without its
    lock while readers go on with the old picture); what the snapshot cannot
    know (rates, memory, restart history, child order, budget use) is carried over.
    """
    procs, begin = state.pending, state.pending_begin
    if procs is None or begin is None:
        return state, []
    g = build_graph(procs)
    old = state.graph._node
    for pid, rec in g._node.items():  # keep what the snapshot cannot know
        prev = old.get(pid)
        if prev is not None:
            rec["rate"] = prev.get("rate", 0.0)
            if rec.get("memory") is None:
                rec["memory"] = prev.get("memory")
    snap_seq = int(msg.get("seq") or 0)
    new = dataclasses.replace(
        state,
        graph=g,
        pid_ordered=True,  # build_graph adds them in pid order
        names={str(k): str(v) for k, v in (msg.get("names") or {}).items()},
        node_meta={**state.node_meta, **(begin.get("node") or {})},
        snap_seq=snap_seq,
        seq=snap_seq,
        snapshots=state.snapshots + 1,
        status="up",
        status_reason=None,
        down_since=None,
        last_seen=now,
        pending=None,
        pending_begin=None,
        rates=rates.keep_only(state.rates, g),
        restart_hist={p: h for p, h in state.restart_hist.items() if p in g},
        traces={p: tr for p, tr in state.traces.items() if p in g},
        sup_restarts=_budgets(state, g, now),
        cid_order=_child_order(state, g),
    )
    return new, [
        Change("reset", None, {"count": g.number_of_nodes(), "seq": snap_seq}),
        Change("status", None, {"status": "up"}),
    ]


def _budgets(state: State, g: nx.DiGraph, now: float) -> dict[str, deque[float]]:
    """Restart budgets: seeded with the snapshot's ``used`` (conservatively, as of now)."""
    out: dict[str, deque[float]] = {}
    for pid, rec in g._node.items():
        b = rec.get("budget")
        if isinstance(b, dict):
            old_q = state.sup_restarts.get(pid)
            used = int(b.get("used") or 0)
            q: deque[float] = deque(old_q) if old_q is not None else deque()
            period = float(b.get("period") or 5.0)
            while q and now - q[0] > period:
                q.popleft()
            while len(q) < used:
                q.append(now)
            while len(q) > used:
                q.popleft()
            out[pid] = q
    return out


def _child_order(state: State, g: nx.DiGraph) -> dict[str, dict[Any, int]]:
    """Pids are sorted: start order, unless we knew better before."""
    order: dict[str, dict[Any, int]] = {}
    for rec in g._node.values():
        sup, cid = rec.get("supervisor"), rec.get("child_id")
        if sup and cid is not None:
            mine = order.get(sup)
            if mine is None:
                mine = order[sup] = dict(state.cid_order.get(sup, {}))
            if cid not in mine:
                mine[cid] = len(mine)
    return order

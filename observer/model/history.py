"""Time travel: checkpoints of the reducer's state, and replay of stored messages with the same reducer.

The history store (:mod:`observer.store`) folds every message it records
with :func:`~observer.model.reducer.reduce` into a :func:`history_state`,
writes :func:`checkpoint` of it now and then, and answers "the tree at T" by
:func:`restore`-ing the last checkpoint before T and :func:`replay`-ing the
stored messages after it: the live model folds the same messages with the
same function, so the two cannot disagree (what samples and commands add --
rates, mailboxes, counters, memory -- is not stored, and stays live-only).

Checkpoint format (``CHECKPOINT_VERSION`` 3), a JSON object::

    {"v": 3,
     "fields": ["pid", "name", ...],  # FIELDS: the order of each row's values
     "procs": [[value, ...], ...],  # one row per process, in graph order
     "extra": [[pid, {key: value}], ...],  # the rare keys a record has beyond FIELDS
     "edges": [[u, v, flags], ...],  # flags: 1 if sup, + 2 if link, + 4 * monitors
     "unpaired": [pid, ...],       # children not joined to their supervisor by just sup+link / link
     "names": {name: pid},
     "cid_order": [[supervisor, [[child_id, position], ...]], ...],
     "node": {...}, "status": "up", "reason": null,
     "seq": 41, "snap_seq": 12, "snapshots": 1, "gaps": 0, "dropped": 0, "last_error": null,
     "last_seen": t, "connected_at": t, "down_since": null,
     "restart_hist": {pid: [entry, ...]}, "sup_restarts": {pid: [t, ...]},
     "gave_up": [...], "blocked": null}

A child whose supervisor is in the picture is usually joined to it by one
edge, sup+link (supervisor -> child; the link of a supervised pair is stored
on that edge only, see :mod:`observer.model.state`): those edges are left out
of ``edges`` (most of a tree's edges), except for the children in
``unpaired``, whose edges (both ways) are all listed as they are. A listed
link is restored as a link of the pair (on the sup edge if there is one), so
checkpoints written when links were stored both ways read the same.

Rows, not a dict per process: a row is read off the slotted record in one C
call and encoded as a plain list, where a dict without its default fields cost
a comprehension per process (the history writer encodes a checkpoint of every
node it attaches to: ~0.3 s of the GIL per 50,000 processes for the dicts).

Version 2 (``"procs"``: a dict per process without the fields at their default
value, no ``"fields"``/``"extra"``) is still read. A version 1 checkpoint
(``{"procs": [records with "links"], "names"}``, no ``"v"``) is read as a
snapshot of those records.
"""

from __future__ import annotations

import json
import operator
import sys
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .records import FIELDS, Proc, edge_flags
from .reducer import reduce
from .snapshot import no_gc, replace_picture
from .state import DEFAULTS, RESTART_HISTORY, State, add_flag, linked, pid_key, set_edge

__all__ = [
    "CHECKPOINT_VERSION",
    "PROC_FIELDS",
    "checkpoint",
    "checkpoint_json",
    "history_state",
    "proc_table",
    "replay",
    "restore",
]

CHECKPOINT_VERSION = 3
JSON_SLICE = 100
"""Records (or edges) encoded per ``json.dumps`` call by :func:`checkpoint_json`: ~0.2 ms
of the GIL, well under the attach manager's 1 ms switch interval. The C encoder never lets
go of the GIL within a call, and a thread that waited one switch interval for it gets it
only at the end of the call and loses it again a switch interval later: with 2,000 records
a slice (~5 ms, a version 3 row per record), a request sorting a million processes while
the history writer checkpointed that node just attached got a sixth of the GIL (bench
browser sort1m: the ``restarts`` click 0.25 -> 1.1-2 s, 0.13 s of its CPU)."""

PROC_FIELDS = (
    "pid",
    "name",
    "label",
    "kind",
    "status",
    "supervisor",
    "parent",
    "child_id",
    "restarts",
    "trap_exit",
    "started_at",
)
"""The fields of each process in :func:`proc_table` (with its ``links``)."""


def history_state(*, restart_history: int = RESTART_HISTORY) -> State:
    """An empty state for history: no recent events, no traces (the store has them)."""
    return State(history_len=restart_history, trace_keep=0, recent=deque(maxlen=0))


def replay(rows: Iterable[tuple[dict[str, Any], float]], state: State | None = None) -> State:
    """Fold stored messages, each with the time it was received, into ``state`` (or an empty
    :func:`history_state`); returns the state after the last (``state`` is consumed)."""
    st = state if state is not None else history_state()
    for msg, now in rows:
        st, _ = reduce(st, msg, now)
    return st


def checkpoint(state: State) -> dict[str, Any]:
    """A JSON-able copy of what history keeps of ``state`` (see the module docstring)."""
    nodes, succ = state.graph._node, state.graph._succ
    with no_gc():
        procs, extra = _rows(nodes)
        # a child and its supervisor: the edge sup+link, implied unless the child is "unpaired"
        sups = {c: rec.get("supervisor") for c, rec in nodes.items()}
        paired: set[str] = set()
        unpaired: list[str] = []
        for c, s in sups.items():
            if s is None or s not in succ:
                continue
            there = succ[s].get(c)
            if s != c and there is not None and (there is _SUP_LINK or _bits(there) == 3) and s not in succ[c]:
                paired.add(c)
            else:
                unpaired.append(c)
        edges = [
            [u, v, _bits(d)]
            for u, nbrs in succ.items()
            for v, d in nbrs.items()
            if not ((v in paired and sups[v] == u) or (u in paired and sups[u] == v))
        ]
    return {
        "v": CHECKPOINT_VERSION,
        "fields": list(FIELDS),
        "procs": procs,
        "extra": extra,
        "edges": edges,
        "unpaired": unpaired,
        "names": state.names,
        "cid_order": [[sup, [[cid, i] for cid, i in order.items()]] for sup, order in state.cid_order.items()],
        "node": state.node_meta,
        "status": state.status,
        "reason": state.status_reason,
        "seq": state.seq,
        "snap_seq": state.snap_seq,
        "snapshots": state.snapshots,
        "gaps": state.gaps,
        "dropped": state.dropped,
        "last_error": state.last_error,
        "last_seen": state.last_seen,
        "connected_at": state.connected_at,
        "down_since": state.down_since,
        "restart_hist": {p: list(h) for p, h in state.restart_hist.items()},
        "sup_restarts": {p: list(q) for p, q in state.sup_restarts.items()},
        "gave_up": list(state.gave_up),
        "blocked": state.blocked,
    }


_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode


def checkpoint_json(state: State, pause: Callable[[], None] | None = None) -> str:
    """:func:`checkpoint` as compact JSON (``default=str``), encoded a slice of
    :data:`JSON_SLICE` records at a time: one ``json.dumps`` of a 50,000-process
    checkpoint holds the GIL for tens of milliseconds, and the history writer's
    thread must not stall the live pushes that long (twenty such nodes
    checkpoint every minute). ``pause()``, if given, is called between two
    slices (the history writer runs waiting logins there: see
    :meth:`observer.db.Database.run_urgent`); it must not change ``state``."""
    body = checkpoint(state)
    if pause is not None:
        pause()
    parts = [_encode({k: v for k, v in body.items() if k not in ("procs", "edges")})[:-1]]
    for key in ("procs", "edges"):
        items = body[key]
        encoded: list[str] = []
        for i in range(0, len(items), JSON_SLICE):
            encoded.append(_encode(items[i : i + JSON_SLICE])[1:-1])
            if pause is not None:
                pause()
        parts.append(f',"{key}":[{",".join(encoded)}]')
    parts.append("}")
    return "".join(parts)


def restore(body: dict[str, Any], *, restart_history: int = RESTART_HISTORY) -> State:
    """The state a :func:`checkpoint` (of any version) was made of."""
    st = history_state(restart_history=restart_history)
    if "v" not in body:  # version 1: a light process table
        st.pending, st.pending_begin = list(body.get("procs") or ()), {}
        st, _ = replace_picture(st, {"seq": 0, "names": body.get("names") or {}}, 0.0)
        st.snap_seq, st.seq, st.snapshots, st.last_seen = -1, 0, 0, None
        return st
    if body["v"] not in (2, CHECKPOINT_VERSION):
        raise ValueError(f"checkpoint version {body['v']} is not 2 or {CHECKPOINT_VERSION}")
    g = st.graph
    with no_gc():
        if body["v"] == 2:
            g.add_nodes_from((sys.intern(str(r["pid"])), r) for r in body["procs"])  # Proc: defaults implied
        else:
            _add_rows(g, body["fields"], body["procs"], body["extra"])
        unpaired = set(body["unpaired"])
        for c, rec in g._node.items():
            s = rec["supervisor"]
            if s in g._node and c not in unpaired:
                set_edge(g, s, c, True, True, 0)
        edges = body["edges"]
        for u, v, bits in edges:
            if bits & 1:
                set_edge(g, u, v, True, bool(bits & 2), bits >> 2)
        for u, v, bits in edges:  # in their order: the adjacency reads as it was written
            if bits & 1:
                continue
            back = g._succ[v].get(u)
            if bits & 2 and back is not None and back.get("sup"):
                # a link child -> supervisor (a checkpoint from when links were stored both ways)
                add_flag(g, v, u, "link")
                set_edge(g, u, v, False, False, bits >> 2)
            else:
                set_edge(g, u, v, False, bool(bits & 2), bits >> 2)
    st.pid_ordered = False  # as it was written: not known to be pid order
    st.names = dict(body["names"])
    st.cid_order = {sup: dict((cid, i) for cid, i in order) for sup, order in body["cid_order"]}
    st.node_meta = dict(body["node"])
    st.status, st.status_reason = body["status"], body["reason"]
    st.seq, st.snap_seq, st.snapshots = body["seq"], body["snap_seq"], body["snapshots"]
    st.gaps, st.dropped, st.last_error = body["gaps"], body["dropped"], body["last_error"]
    st.last_seen, st.connected_at, st.down_since = body["last_seen"], body["connected_at"], body["down_since"]
    st.restart_hist = {p: deque(h, maxlen=restart_history) for p, h in body["restart_hist"].items()}
    st.sup_restarts = {p: deque(q) for p, q in body["sup_restarts"].items()}
    st.gave_up.extend(body["gave_up"])
    st.blocked = body["blocked"]
    return st


def _add_rows(g: Any, fields: list[str], rows: list[list[Any]], extra: list[list[Any]]) -> None:
    """The records of a version 3 checkpoint into the empty graph ``g``, in their order (``fields``:
    the names of a row's values, as they were written: a field unknown here becomes an extra key)."""
    nodes, succ, pred = g._node, g._succ, g._pred
    for row in rows:
        rec = Proc()
        rec.update(zip(fields, row, strict=True))  # strings interned, as live
        pid = rec["pid"] = sys.intern(str(rec["pid"]))
        if pid not in nodes:
            succ[pid], pred[pid] = {}, {}
        nodes[pid] = rec
    for pid, more in extra:
        nodes[pid].update(more)


_all_fields = operator.attrgetter(*FIELDS)
_extra_of = operator.attrgetter("_extra")
_SUP_LINK = edge_flags(True, True, 0)
"""The flags of a supervisor's edge to a child it is linked with (shared by all such edges)."""
_FIELDSET = frozenset(FIELDS)


def _rows(nodes: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
    """Each record as a row of :data:`FIELDS` (graph order; tuples: of plain values, the collector
    soon stops tracking them, where 50,000 lists stayed in its sight), and the extra keys of
    those that have any."""
    recs = nodes.values()
    rows: list[tuple[Any, ...]]
    extra: list[list[Any]]
    if set(map(type, recs)) <= {Proc}:  # the common case: every row in one C call
        rows = list(map(_all_fields, recs))
        extra = [[pid, dict(ex)] for pid, ex in zip(nodes, map(_extra_of, recs), strict=True) if ex]
        return rows, extra
    rows, extra = [], []
    for pid, rec in nodes.items():  # plain dicts among them (a graph built by hand)
        if type(rec) is Proc:
            rows.append(_all_fields(rec))
            if rec._extra:
                extra.append([pid, dict(rec._extra)])
            continue
        rows.append(tuple(rec.get(k, d) for k, d in DEFAULTS.items()))
        more = {k: v for k, v in rec.items() if k not in _FIELDSET}
        if more:
            extra.append([pid, more])
    return rows, extra


def _bits(d: dict[str, Any]) -> int:
    return (1 if d.get("sup") else 0) + (2 if d.get("link") else 0) + 4 * int(d.get("monitor") or 0)


def proc_table(state: State) -> list[dict[str, Any]]:
    """The processes as flat records (:data:`PROC_FIELDS` and ``links``), by pid."""
    g = state.graph
    rows = []
    for pid, rec in g._node.items():
        row = {k: rec.get(k) for k in PROC_FIELDS}
        row["links"] = sorted(linked(g, pid), key=pid_key)
        rows.append(row)
    rows.sort(key=lambda r: pid_key(str(r["pid"])))
    return rows

"""The model's state and its small shared types: what the reducer folds messages into.

:class:`State` is plain data: a :class:`networkx.DiGraph` of processes plus
the dictionaries and queues derived from the same message stream. It has no
lock and no clock; :class:`~observer.model.NodeModel` (the facade) adds both.

Graph conventions
    * nodes: pids (``"<0.42.0>"``); the node attributes *are* the process
      record (the snapshot's fields minus ``links``/``monitors``, which are
      edges, plus ``rate`` in messages/s and ``memory`` once known);
    * one ``DiGraph`` edge per ordered pair, carrying flags for the relations
      it stands for, because a supervisor and its child are also linked:
      ``sup`` (supervisor -> child), ``link`` and ``monitor`` (watcher ->
      target; an int count of monitors, as one process may monitor another
      several times). ``kind`` is the strongest relation present (``sup`` >
      ``link`` > ``monitor``).
    * a link is symmetric and stored in *both* directions (a -> b and b -> a),
      except between a supervisor and its child: there it is the ``link`` flag
      of the ``sup`` edge alone (no child -> supervisor edge unless a monitor
      needs one: ~190 B a process less, as every supervised child is linked
      to its supervisor). :func:`link_pair`, :func:`unlink_pair` and
      :func:`linked` keep and read that rule; :func:`add_flag` moves a link
      onto an edge that becomes ``sup``, :func:`remove_flag` back off it.

    Hot loops in this package read networkx's underlying dicts (``_node``,
    ``_succ``, ``_pred``) rather than its views, which cost ~5x more per access.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import networkx as nx

from .records import DEFAULTS, ProcGraph, edge_flags

__all__ = [
    "DEFAULTS",
    "RECENT_EVENTS",
    "RESTART_HISTORY",
    "SERIES_MAXLEN",
    "SERIES_WINDOW",
    "TRACE_KEEP",
    "Change",
    "Rates",
    "State",
    "add_flag",
    "flags_kind",
    "link_pair",
    "linked",
    "pid_key",
    "remove_flag",
    "set_edge",
    "unlink_pair",
]

RESTART_HISTORY = 20
"""Restarts remembered per process (the latest)."""
SERIES_WINDOW = 600.0
"""Seconds of node-level time series kept for charts."""
SERIES_MAXLEN = 6000
"""Points per series, whatever the sample rate (a bound on memory)."""
RECENT_EVENTS = 1000
"""Events kept for :meth:`NodeModel.recent_events`."""
TRACE_KEEP = 200
"""Traced messages kept per process."""
SERIES = ("process_count", "message_rate", "restart_rate", "loop_lag_ms", "top_mailboxes")


class Change(NamedTuple):
    """One thing that changed in the model, for batched pushes to browsers.

    ``kind`` is one of ``reset`` (a snapshot replaced the picture), ``spawn``,
    ``exit``, ``update``, ``restart``, ``link``, ``unlink``, ``monitor``,
    ``demonitor``, ``register``, ``suspend``, ``resume``, ``gave_up``,
    ``trace``, ``loop_blocked``, ``loop_unblocked``, ``samples``, ``gap``,
    ``status`` (up/down/syncing) or ``error``. ``data`` is small and JSON-able.
    """

    kind: str
    """What happened (see above)."""
    pid: str | None = None
    """The process it happened to, if one."""
    data: dict[str, Any] | None = None
    """Details for the browser (small, JSON-able)."""

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pid": self.pid, "data": self.data}


@functools.lru_cache(maxsize=1 << 18)
def pid_key(pid: str) -> tuple[int, ...]:
    """Numeric sort key of a pid string (``"<0.42.0>"`` -> ``(0, 42, 0)``)."""
    try:
        return tuple(int(x) for x in pid.strip("<>").split("."))
    except ValueError:
        return (1 << 62,)


def _series() -> dict[str, deque[list[Any]]]:
    return {k: deque(maxlen=SERIES_MAXLEN) for k in SERIES}


@dataclass(slots=True, eq=False)
class Rates:
    """What samples add to the picture (see :mod:`observer.model.rates`): never stored in history."""

    window: float = SERIES_WINDOW
    """Seconds of series kept."""
    last_in: dict[str, tuple[float, int] | float] = field(default_factory=dict)
    """Per pid: (sample time, msgs_in) of its last sample, for its message rate (the time alone
    while msgs_in is 0)."""
    rate_nonzero: set[str] = field(default_factory=set)
    """Pids whose rate is not 0 (to zero them when they stop appearing in samples)."""
    mailbox_nonzero: set[str] = field(default_factory=set)
    """Pids with a non-empty mailbox (the top-mailboxes series looks only at them)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """The node's latest counters (``samples``' ``node``)."""
    prev_stats: dict[str, Any] | None = None
    """The counters before those, for rates."""
    sample_time: float | None = None
    """Time of the latest node counters."""
    series: dict[str, deque[list[Any]]] = field(default_factory=_series)
    """Node-level time series: ``{name: deque([t, value])}``."""


@dataclass(slots=True, eq=False)
class State:
    """Everything the reducer knows about one node. Mutable plain data, no lock:
    owned by whoever holds it (the facade under its lock, the history writer, a replay)."""

    graph: nx.DiGraph = field(default_factory=ProcGraph)
    """Processes and their relations (see the module docstring)."""
    pid_ordered: bool = True
    """The graph's node order is pid order (a snapshot's is; spawns of ever higher pids keep it):
    the process table's pid order is then the graph's, without a sort."""
    names: dict[str, str] = field(default_factory=dict)
    """Registered name -> pid."""
    cid_order: dict[str, dict[Any, int]] = field(default_factory=dict)
    """Per supervisor: child id -> start position (child spec order, for the tree and previews).
    The positions of one supervisor are always 0..n-1, so a new child id takes n."""
    node_meta: dict[str, Any] = field(default_factory=dict)
    """What the agent says about its node (hello, welcome, snapshot)."""
    status: str = "connecting"
    """``connecting``, ``syncing`` (attached, waiting for the snapshot), ``up`` or ``down``."""
    status_reason: str | None = None
    """Why it is down."""
    last_seen: float | None = None
    """When a message last came from the agent."""
    connected_at: float | None = None
    """When the link was last authenticated."""
    down_since: float | None = None
    """When the link went down (None while it is not)."""
    seq: int = 0
    """Highest event sequence number folded."""
    snap_seq: int = -1
    """Sequence number of the last snapshot: events at or below it are already in it."""
    snapshots: int = 0
    """Snapshots folded."""
    gaps: int = 0
    """Gaps announced by the agent."""
    dropped: int = 0
    """Events the agent said it dropped."""
    last_error: str | None = None
    """The agent's last error message."""
    pending: list[Any] | None = None
    """Records of a snapshot being received (between ``snapshot_begin`` and ``snapshot_end``),
    raw or made compact on arrival (:func:`observer.model.snapshot.prepare`)."""
    pending_begin: dict[str, Any] | None = None
    """Its ``snapshot_begin``."""
    history_len: int = RESTART_HISTORY
    """Restarts remembered per process."""
    restart_hist: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    """Per pid: its latest restarts (moved to the new pid on each restart)."""
    sup_restarts: dict[str, deque[float]] = field(default_factory=dict)
    """Per supervisor: times of restarts, for its budget estimate."""
    trace_keep: int = TRACE_KEEP
    """Traced messages kept per process (0: none)."""
    traces: dict[str, deque[dict[str, Any]]] = field(default_factory=dict)
    """Per pid: traced messages."""
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    """The latest events (crash reports replaced by a flag)."""
    gave_up: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100))
    """Supervisors that gave up (latest 100)."""
    blocked: dict[str, Any] | None = None
    """The event loop is blocked now: by what."""
    rates: Rates = field(default_factory=Rates)
    """What samples add."""

    def record(self, pid: str) -> dict[str, Any] | None:
        """The record of ``pid`` (the graph's own dict: read it only), or None."""
        rec: dict[str, Any] | None = self.graph._node.get(pid)
        return rec


def flags_kind(d: dict[str, Any]) -> str | None:
    """The strongest relation an edge's flags stand for (``sup`` > ``link`` > ``monitor``), or None."""
    if d.get("sup"):
        return "sup"
    if d.get("link"):
        return "link"
    if d.get("monitor"):
        return "monitor"
    return None


def add_flag(g: nx.DiGraph, u: str, v: str, flag: str) -> None:
    """Add the relation ``flag`` (``sup``, ``link`` or ``monitor``) to the edge u -> v
    (``link`` on this edge only: :func:`link_pair` links a pair)."""
    d = g._succ[u].get(v)
    if d is None:
        g.add_edge(u, v)
        sup, link, mon = False, False, 0
    else:
        sup, link, mon = bool(d.get("sup")), bool(d.get("link")), int(d.get("monitor") or 0)
    if flag == "monitor":
        mon += 1
    elif flag == "sup":
        sup = True
        back = g._succ[v].get(u)
        if back is not None and back.get("link"):  # the pair's link moves onto the sup edge
            link = True
            _set(g, v, u, bool(back.get("sup")), False, int(back.get("monitor") or 0))
    else:
        link = True
    g._succ[u][v] = g._pred[v][u] = edge_flags(sup, link, mon)


def remove_flag(g: nx.DiGraph, u: str, v: str, flag: str) -> None:
    """Remove the relation ``flag`` (one monitor) from the edge u -> v; the edge goes with its last flag
    (``sup`` off an edge that carries the pair's link: the link is stored both ways again)."""
    d = g._succ[u].get(v) if u in g else None
    if d is None:
        return
    sup, link, mon = bool(d.get("sup")), bool(d.get("link")), int(d.get("monitor") or 0)
    if flag == "monitor":
        mon = max(0, mon - 1)
    elif flag == "sup":
        if sup and link and v in g._succ:
            add_flag(g, v, u, "link")
        sup = False
    else:
        link = False
    _set(g, u, v, sup, link, mon)


def _set(g: nx.DiGraph, u: str, v: str, sup: bool, link: bool, monitor: int) -> None:
    if not (sup or link or monitor):
        if v in g._succ.get(u, ()):
            g.remove_edge(u, v)
        return
    if v not in g._succ[u]:
        g.add_edge(u, v)
    g._succ[u][v] = g._pred[v][u] = edge_flags(sup, link, monitor)


def link_pair(g: nx.DiGraph, a: str, b: str) -> None:
    """Link ``a`` and ``b``: on the sup edge if one supervises the other, else both ways."""
    if a == b:
        return
    there = g._succ[a].get(b)
    if there is not None and there.get("sup"):
        add_flag(g, a, b, "link")
        return
    back = g._succ[b].get(a)
    if back is not None and back.get("sup"):
        add_flag(g, b, a, "link")
        return
    add_flag(g, a, b, "link")
    add_flag(g, b, a, "link")


def unlink_pair(g: nx.DiGraph, a: str, b: str) -> None:
    """Unlink ``a`` and ``b`` (either way it was stored)."""
    remove_flag(g, a, b, "link")
    remove_flag(g, b, a, "link")


def linked(g: nx.DiGraph, pid: str) -> list[str]:
    """Who ``pid`` is linked with (see the module docstring for how links are stored)."""
    out = [v for v, d in g._succ[pid].items() if d.get("link")]
    succ = g._succ[pid]
    for u, d in g._pred[pid].items():
        if d.get("link") and d.get("sup"):  # its supervisor: the link is stored on the sup edge
            back = succ.get(u)
            if back is None or not back.get("link"):
                out.append(u)
    return out


def set_edge(g: nx.DiGraph, u: str, v: str, sup: bool, link: bool, monitor: int) -> None:
    """The edge u -> v with exactly these relations (none: no edge); ``link`` on this edge only."""
    _set(g, u, v, sup, link, monitor)

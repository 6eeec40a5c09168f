"""The facade: :class:`NodeModel`, the live picture of one attached node, behind one lock.

Writers hand it messages; :func:`~observer.model.reducer.reduce` folds them
into its :class:`~observer.model.state.State`; readers ask the query
functions (:mod:`~observer.model.queries`, :mod:`~observer.model.tree`,
:mod:`~observer.model.kill_preview`) under the same lock.

Threading rules
    Messages come from one thread (the attach loop, through :meth:`NodeModel.apply`);
    :meth:`NodeModel.merge_info` may come from any. Every public method takes
    the model's single lock (an ``RLock``) for its whole duration, so a reader
    never sees half an update -- except that a ``snapshot_end`` is folded into a
    *new* state without the lock (the reducer leaves the old one as it is) and
    swapped in under it, so readers go on with the old picture while a big
    graph is built. Query methods return *copies* (plain, JSON-able dicts and
    lists); never hold on to :attr:`NodeModel.graph` or mutate it outside the
    lock -- use :meth:`NodeModel.locked` if you need the raw graph for a moment.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

import networkx as nx

from . import queries
from .kill_preview import kill_preview
from .order import Order, compute_order
from .queries import GraphView
from .reducer import reduce
from .state import RESTART_HISTORY, SERIES_WINDOW, Change, Rates, State
from .tree import build_tree

__all__ = ["AGGREGATE_AGE_PER_PROCESS", "AGGREGATE_MAX_AGE", "ORDER_MAX_AGE", "NodeModel"]

AGGREGATE_MAX_AGE = 1.0
"""Seconds the summary's status/kind counts and mailbox total may be old..."""
AGGREGATE_AGE_PER_PROCESS = 1e-4
"""... or, on a bigger node, this many seconds per process (5 s at 50,000): each count walks
every process (~8 ms at 50,000, under the node's lock), and the live pushes ask for the summary
with every batch: twenty such nodes cost the pushing thread ~0.15 s a second, on the way of
every update to the browser (``python -m bench fanin`` at a million processes)."""
ORDER_MAX_AGE = 2.0
"""Seconds a process table's sort order may be old (its rows are always fresh)."""
ORDER_MIN_ROWS = 20_000
"""Tables smaller than this are sorted afresh for every page (a few milliseconds)."""
ORDERS_KEPT = 3
"""Sort orders kept per node (the latest used): 8 MB each at a million processes."""


class NodeModel:
    """The live picture of one node. See the module docstring for the threading rules."""

    def __init__(
        self,
        name: str = "",
        *,
        restart_history: int = RESTART_HISTORY,
        series_window: float = SERIES_WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._clock = clock
        self._state = State(history_len=restart_history, rates=Rates(window=series_window))
        self._agg: tuple[float, tuple[dict[str, int], dict[str, int], int]] | None = None
        self._orders: dict[str, tuple[float, nx.DiGraph, Order, float]] = {}
        self._order_lock = threading.Lock()  # one order computed at a time

    # -- raw access ---------------------------------------------------------------------------

    @property
    def graph(self) -> nx.DiGraph:
        """The graph now (replaced by each snapshot): read it under :meth:`locked` only."""
        return self._state.graph

    @contextlib.contextmanager
    def locked(self) -> Iterator[nx.DiGraph]:
        """Hold the lock and get the raw graph (read it only; keep it short)."""
        with self._lock:
            yield self._state.graph

    @contextlib.contextmanager
    def view(self) -> Iterator[GraphView]:
        """Hold the lock and get a read-only :class:`GraphView` of the picture now (keep it short)."""
        with self._lock:
            yield GraphView(self._state, self._clock())

    def __len__(self) -> int:
        with self._lock:
            return int(self._state.graph.number_of_nodes())

    def __contains__(self, pid: object) -> bool:
        with self._lock:
            return pid in self._state.graph._node

    def pids(self) -> set[str]:
        """The pids in the picture now (a copy)."""
        with self._lock:
            return set(self._state.graph._node)

    @property
    def status(self) -> str:
        with self._lock:
            return self._state.status

    # -- feeding -------------------------------------------------------------------------------

    def apply(self, msg: dict[str, Any]) -> list[Change]:
        """Fold one message from the agent (see :mod:`~observer.model.reducer`); returns what changed."""
        now = self._clock()
        if msg.get("t") == "snapshot_end":
            new, changes = reduce(self._state, msg, now)  # builds a new state; the old one is only read
            with self._lock:
                self._state = new
            return changes
        with self._lock:
            self._state, changes = reduce(self._state, msg, now)
            return changes

    def apply_many(self, msgs: Iterable[dict[str, Any]]) -> list[Change]:
        """:meth:`apply` each message under one lock acquisition."""
        out: list[Change] = []
        with self._lock:
            for m in msgs:
                out.extend(self.apply(m))
        return out

    def connected(self, hello: dict[str, Any] | None = None, welcome: dict[str, Any] | None = None) -> list[Change]:
        """The attachment authenticated: waiting for the snapshot."""
        msg: dict[str, Any] = {"t": "status", "status": "syncing"}
        if hello and isinstance(hello.get("node"), dict):
            msg["node"] = hello["node"]
        if welcome:
            msg.update(session=welcome.get("session"), role=welcome.get("role"), commands=welcome.get("commands"))
        return self.apply(msg)

    def disconnected(self, reason: str | None = None) -> list[Change]:
        """The connection is gone: keep the last-known picture, marked down."""
        return self.apply({"t": "status", "status": "down", "reason": reason})

    def merge_info(self, pid: str, info: dict[str, Any]) -> None:
        """Merge the result of an ``info``/``inspect`` command (memory, budget, trap_exit, child order)."""
        self.apply({"t": "info", "pid": pid, "info": info})

    def set_child_order(self, sup: str, child_ids: list[Any]) -> None:
        """The supervisor's child spec order (from ``inspect``), for rest_for_one previews."""
        self.apply({"t": "child_order", "supervisor": sup, "ids": list(child_ids)})

    # -- queries: node -------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """Health and counts: status up/syncing/down/connecting, last seen, lag, rates.

        The counts by status and kind and the mailbox total walk every process
        (~4.5 ms for 10,000), so they are computed at most once per
        ``AGGREGATE_MAX_AGE`` seconds, or ``AGGREGATE_AGE_PER_PROCESS`` per process on a big node
        (every live batch asks for the summary)."""
        with self._lock:
            mono = time.monotonic()
            cached = self._agg
            if cached is None or mono >= cached[0]:
                max_age = max(AGGREGATE_MAX_AGE, AGGREGATE_AGE_PER_PROCESS * len(self._state.graph))
                # each count is good for 0.75-1.25 of its age, drawn afresh: nodes attached
                # together drift apart instead of all walking their processes in the same
                # push (twenty 50,000-process nodes at once held the pushing thread ~0.4 s)
                cached = self._agg = (mono + max_age * (0.75 + 0.5 * random.random()), queries.aggregates(self._state))
            return queries.summary(self._state, self.name, cached[1])

    def series(self, since: float | None = None) -> dict[str, list[list[Any]]]:
        """Node time series for charts: ``{name: [[t, value], ...]}`` for ``process_count``,
        ``message_rate``, ``restart_rate``, ``loop_lag_ms`` and ``top_mailboxes``
        (value: ``[[pid, name, mailbox], ...]``)."""
        with self._lock:
            return queries.series(self._state, since)

    def recent_events(self, limit: int = 100, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The latest events (newest last), optionally of some kinds only."""
        with self._lock:
            ks = set(kinds) if kinds is not None else None
            out = [dict(e) for e in self._state.recent if ks is None or e.get("ev") in ks]
        return out[-limit:] if limit else out

    def traces(self, pid: str) -> list[dict[str, Any]]:
        """Traced messages of ``pid`` received since tracing started (latest 200)."""
        with self._lock:
            return [dict(x) for x in self._state.traces.get(pid, ())]

    def names(self) -> dict[str, str]:
        """Registered names -> pids (a copy)."""
        with self._lock:
            return dict(self._state.names)

    # -- queries: processes --------------------------------------------------------------------

    def processes(
        self,
        sort: str = "pid",
        desc: bool = False,
        filter_name: str | None = None,
        supervisor: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        """One page of the process table: ``{"total": matching, "rows": [...]}``.

        ``filter_name`` matches (case-insensitively) a part of the name, label or
        pid; ``supervisor`` keeps its direct children; ``status`` one status.
        Rows whose sort value is None (``memory`` before it is known) come last.
        ``sort`` is one of :data:`~observer.model.queries.SORT_KEYS` (ValueError otherwise).
        Ties are broken by pid (descending when ``desc``). Without filters, a
        table of :data:`ORDER_MIN_ROWS` or more is sorted at most once per
        :data:`ORDER_MAX_AGE` seconds (see :mod:`~observer.model.order`): pages
        read in a row agree with each other, and a process started meanwhile
        shows up at the next sort.
        """
        if sort not in queries.SORT_KEYS:
            raise ValueError(f"cannot sort by {sort!r}; one of {', '.join(queries.SORT_KEYS)}")
        order = self._order(sort) if filter_name is None and supervisor is None and status is None else None
        with self._lock:
            return queries.processes(
                self._state,
                order=order,
                sort=sort,
                desc=desc,
                filter_name=filter_name,
                supervisor=supervisor,
                status=status,
                offset=offset,
                limit=limit,
            )

    def _order(self, sort: str) -> Order:
        """The ascending order by ``sort``: kept a little while, computed off the model's lock."""
        with self._order_lock:
            with self._lock:
                g = self._state.graph
                kept = self._orders.pop(sort, None)
                if kept is not None and kept[1] is g and len(g._node) >= ORDER_MIN_ROWS:
                    done, _, order, took = kept
                    # a sort that took long is kept longer: paging never spends more than ~1/5 of a core on it
                    if time.monotonic() - done < max(ORDER_MAX_AGE, 5 * took):
                        self._orders[sort] = kept  # most recently used last
                        return order
                nodes = dict(g._node)  # records keep changing; the order is a moment's
                ordered = self._state.pid_ordered
            t0 = time.monotonic()
            order = compute_order(nodes, sort, pid_ordered=ordered)
            done = time.monotonic()
            with self._lock:
                self._orders[sort] = (done, g, order, done - t0)
                while len(self._orders) > ORDERS_KEPT:
                    del self._orders[next(iter(self._orders))]
            return order

    def process(self, pid: str) -> dict[str, Any] | None:
        """Everything known about one process: the record, links, monitors (both
        ways), children if a supervisor, restart history, path to the root,
        budget estimate if a supervisor. None if not in the picture."""
        with self._lock:
            return queries.process(self._state, GraphView(self._state, self._clock()), pid)

    def links(self, pid: str) -> dict[str, Any]:
        """Links and monitors of ``pid`` as edges, for drawing on demand:
        ``{"links": [[a, b]...], "monitors": [[watcher, target]...]}`` (both directions of monitors)."""
        with self._lock:
            return queries.links(self._state, pid)

    def path_to_root(self, pid: str) -> list[str]:
        """Supervisor chain from the root down to ``pid`` (inclusive); [] if unknown."""
        with self._lock:
            return GraphView(self._state).path(pid)

    def search(self, q: str, limit: int = 50) -> list[dict[str, Any]]:
        """Processes whose pid, name, label or child id contains ``q``, each with its path to the root."""
        with self._lock:
            return queries.search(GraphView(self._state), q, limit)

    # -- queries: tree and kill preview -------------------------------------------------------

    def tree(self, *, group_threshold: int = 20, expanded: Collection[str] = (), fold: int = 0) -> dict[str, Any]:
        """The supervision forest as one nested dict (see :func:`observer.model.tree.build_tree`)."""
        with self._lock:
            return build_tree(self._state, self.name, group_threshold=group_threshold, expanded=expanded, fold=fold)

    def kill_preview(self, pid: str, reason: str = "kill", *, limit: int = 1000) -> dict[str, Any]:
        """What killing ``pid`` with ``reason`` would do, reasoned from the picture
        (the rules: :mod:`observer.model.kill_preview`).

        Returns ``{"target", "exists", "reason", "target_dies", "is_supervisor",
        "subtree", "down" (pids that go down, target first), "linked_down"
        (those that go down through a link, not as a restart or a subtree),
        "notified" (trapping processes that get an exit message and survive),
        "restarts" ([{"supervisor", "strategy", "trigger", "restarted"}]),
        "gives_up" ([{"supervisor", "used", "intensity", "period"}]),
        "escalation" (the supervisors that give up, innermost first),
        "budget" (the target's supervisor's budget estimate), "warnings"}``.
        Lists are capped at ``limit`` (``*_count`` fields hold the totals).
        """
        with self._lock:
            return kill_preview(GraphView(self._state, self._clock()), pid, reason, limit=limit)

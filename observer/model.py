"""The live picture of one attached node: a :class:`networkx.DiGraph` fed by the agent.

:class:`NodeModel` is the one place the web pages and handlers read a node
from. It is written by exactly one thread (the attach loop, through
:meth:`NodeModel.apply`) and read by any number of others (Flask threads):

Threading rules
    Every public method takes the model's single lock (an ``RLock``) for its
    whole duration, so a reader never sees half an update. Query methods
    return *copies* (plain, JSON-able dicts and lists); never hold on to
    :attr:`NodeModel.graph` or mutate it outside the lock -- use
    :meth:`NodeModel.locked` if you need the raw graph for a moment.

Graph conventions
    * nodes: pids (``"<0.42.0>"``); the node attributes *are* the process
      record (the snapshot's fields minus ``links``/``monitors``, which are
      edges, plus ``rate`` in messages/s and ``memory`` once known);
    * one ``DiGraph`` edge per ordered pair, carrying flags for the relations
      it stands for, because a supervisor and its child are also linked:
      ``sup`` (supervisor -> child), ``link`` (stored in *both* directions,
      a -> b and b -> a) and ``monitor`` (watcher -> target; an int count of
      monitors, as one process may monitor another several times). ``kind``
      is the strongest relation present (``sup`` > ``link`` > ``monitor``).

    Hot loops read networkx's underlying dicts (``_node``, ``_succ``,
    ``_pred``) rather than its views, which cost ~5x more per access.

Idempotence
    Events already reflected in the snapshot (``seq`` at or below the
    snapshot's) are ignored; a ``spawn`` of a known pid updates it, an
    ``exit`` of an unknown pid does nothing, so a replay is harmless.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import networkx as nx

__all__ = ["Change", "NodeModel", "pid_key"]

RESTART_HISTORY = 20
"""Restarts remembered per process (the latest)."""
SERIES_WINDOW = 600.0
"""Seconds of node-level time series kept for charts."""
SERIES_MAXLEN = 6000
"""Points per series, whatever the sample rate (a bound on memory)."""
TOP_MAILBOXES = 5
RECENT_EVENTS = 1000
AGGREGATE_MAX_AGE = 1.0
"""Seconds the summary's status/kind counts and mailbox total may be old."""
TRACE_KEEP = 200

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
"""Columns :meth:`NodeModel.processes` can sort by."""

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


_DEFAULTS: dict[str, Any] = {
    "pid": None,
    "name": None,
    "label": None,
    "kind": "worker",
    "status": "waiting",
    "supervisor": None,
    "parent": None,
    "child_id": None,
    "restarts": 0,
    "mailbox": 0,
    "msgs_in": 0,
    "msgs_out": 0,
    "handled": 0,
    "handler_time": 0.0,
    "trap_exit": None,
    "started_at": None,
    "budget": None,
    "memory": None,
    "rate": 0.0,
}


class Change(NamedTuple):
    """One thing that changed in the model, for batched pushes to browsers.

    ``kind`` is one of ``reset`` (a snapshot replaced the picture), ``spawn``,
    ``exit``, ``update``, ``restart``, ``link``, ``unlink``, ``monitor``,
    ``demonitor``, ``register``, ``suspend``, ``resume``, ``gave_up``,
    ``trace``, ``loop_blocked``, ``loop_unblocked``, ``samples``, ``gap``,
    ``status`` (up/down/syncing) or ``error``. ``data`` is small and JSON-able.
    """

    kind: str
    pid: str | None = None
    data: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "pid": self.pid, "data": self.data}


@functools.lru_cache(maxsize=1 << 18)
def pid_key(pid: str) -> tuple[int, ...]:
    """Numeric sort key of a pid string (``"<0.42.0>"`` -> ``(0, 42, 0)``)."""
    try:
        return tuple(int(x) for x in pid.strip("<>").split("."))
    except ValueError:
        return (1 << 62,)


def _flags_kind(d: dict[str, Any]) -> str | None:
    if d.get("sup"):
        return "sup"
    if d.get("link"):
        return "link"
    if d.get("monitor"):
        return "monitor"
    return None


class NodeModel:
    """The live picture of one node. See the module docstring for the threading rules."""

    def __init__(
        self,
        name: str = "",
        *,
        restart_history: int = RESTART_HISTORY,
        series_window: float = SERIES_WINDOW,
        clock: Any = time.time,
    ) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._clock = clock
        self.graph: nx.DiGraph = nx.DiGraph()
        self._names: dict[str, str] = {}
        self._node_meta: dict[str, Any] = {}
        self._status = "connecting"
        self._status_reason: str | None = None
        self._last_seen: float | None = None
        self._connected_at: float | None = None
        self._down_since: float | None = None
        self._seq = 0
        self._snap_seq = -1
        self._snapshots = 0
        self._gaps = 0
        self._dropped = 0
        self._last_error: str | None = None
        self._pending: list[dict[str, Any]] | None = None
        self._pending_begin: dict[str, Any] | None = None
        # per-process derived state
        self._last_in: dict[str, tuple[float, int]] = {}
        self._rate_nonzero: set[str] = set()
        self._mailbox_nonzero: set[str] = set()
        self._history_len = restart_history
        self._restart_hist: dict[str, deque[dict[str, Any]]] = {}
        self._sup_restarts: dict[str, deque[float]] = {}
        self._cid_order: dict[str, dict[str, int]] = {}
        self._traces: dict[str, deque[dict[str, Any]]] = {}
        # node-level
        self._stats: dict[str, Any] = {}
        self._sample_time: float | None = None
        self._prev_stats: dict[str, Any] | None = None
        self._window = series_window
        self._series: dict[str, deque[list[Any]]] = {
            k: deque(maxlen=SERIES_MAXLEN)
            for k in ("process_count", "message_rate", "restart_rate", "loop_lag_ms", "top_mailboxes")
        }
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._agg: tuple[float, dict[str, int], dict[str, int], int] | None = None
        self._blocked: dict[str, Any] | None = None
        self._gave_up: deque[dict[str, Any]] = deque(maxlen=100)

    # -- raw access ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[nx.DiGraph]:
        """Hold the lock and get the raw graph (read it only; keep it short)."""
        with self._lock:
            yield self.graph

    def __len__(self) -> int:
        with self._lock:
            return int(self.graph.number_of_nodes())

    def __contains__(self, pid: object) -> bool:
        with self._lock:
            return bool(self.graph.has_node(pid))

    def pids(self) -> set[str]:
        """The pids in the picture now (a copy)."""
        with self._lock:
            return set(self.graph.nodes)

    # -- connection state (called by the attachment) ---------------------------------------------

    def connected(self, hello: dict[str, Any] | None = None, welcome: dict[str, Any] | None = None) -> list[Change]:
        """The attachment authenticated: waiting for the snapshot."""
        with self._lock:
            now = self._clock()
            if hello and isinstance(hello.get("node"), dict):
                self._node_meta = dict(hello["node"])
            if welcome:
                self._node_meta["session"] = welcome.get("session")
                self._node_meta["role"] = welcome.get("role")
                self._node_meta["commands"] = list(welcome.get("commands") or [])
            self._status = "syncing"
            self._status_reason = None
            self._connected_at = now
            self._last_seen = now
            self._pending = None
            self._pending_begin = None
            return [Change("status", None, {"status": "syncing"})]

    def disconnected(self, reason: str | None = None) -> list[Change]:
        """The connection is gone: keep the last-known picture, marked down."""
        with self._lock:
            if self._status != "down":
                self._down_since = self._clock()
            self._status = "down"
            self._status_reason = reason
            self._pending = None
            self._pending_begin = None
            self._blocked = None
            for pid in self._rate_nonzero:
                rec = self.graph._node.get(pid)
                if rec is not None:
                    rec["rate"] = 0.0
            self._rate_nonzero.clear()
            return [Change("status", None, {"status": "down", "reason": reason})]

    @property
    def status(self) -> str:
        with self._lock:
            return self._status

    # -- feeding -----------------------------------------------------------------------------------

    def apply_many(self, msgs: Iterable[dict[str, Any]]) -> list[Change]:
        """:meth:`apply` each message under one lock acquisition."""
        out: list[Change] = []
        with self._lock:
            for m in msgs:
                out.extend(self.apply(m))
        return out

    def apply(self, msg: dict[str, Any]) -> list[Change]:
        """Apply one pushed message from the agent; returns what changed."""
        t = msg.get("t")
        if t == "snapshot_end":
            return self._snapshot_end(msg)  # builds the new graph outside the lock
        with self._lock:
            self._last_seen = self._clock()
            if t == "ev":
                return self._event(msg)
            if t == "samples":
                return self._samples(msg)
            if t == "snapshot_begin":
                self._pending_begin = msg
                self._pending = []
                return []
            if t == "snapshot_chunk":
                if self._pending is not None:
                    self._pending.extend(msg.get("procs") or [])
                return []
            if t == "gap":
                n = int(msg.get("dropped") or 0)
                self._gaps += 1
                self._dropped += n
                return [Change("gap", None, {"dropped": n})]
            if t == "error":
                self._last_error = f"{msg.get('code')}: {msg.get('message')}"
                return [Change("error", None, {"code": msg.get("code"), "message": msg.get("message")})]
            return []

    # -- snapshots ---------------------------------------------------------------------------------

    def _snapshot_end(self, msg: dict[str, Any]) -> list[Change]:
        with self._lock:
            procs, begin = self._pending, self._pending_begin
            self._pending = None
            self._pending_begin = None
        if procs is None or begin is None:
            return []
        gc_was_on = gc.isenabled()
        gc.disable()  # 100,000 fresh dicts would trigger many full collections
        try:
            g = self._build(procs)
        finally:
            if gc_was_on:
                gc.enable()
        now = self._clock()
        with self._lock:
            old = self.graph
            for pid, rec in g._node.items():  # keep what the snapshot cannot know
                prev = old._node.get(pid)
                if prev is not None:
                    rec["rate"] = prev.get("rate", 0.0)
                    if rec.get("memory") is None:
                        rec["memory"] = prev.get("memory")
            self.graph = g
            self._names = {str(k): str(v) for k, v in (msg.get("names") or {}).items()}
            self._node_meta.update(begin.get("node") or {})
            self._snap_seq = int(msg.get("seq") or 0)
            self._seq = self._snap_seq
            self._snapshots += 1
            self._status = "up"
            self._status_reason = None
            self._down_since = None
            self._last_seen = now
            self._last_in = {p: v for p, v in self._last_in.items() if p in g}
            self._rate_nonzero = {p for p in self._rate_nonzero if p in g and g._node[p].get("rate")}
            self._mailbox_nonzero = {p for p, r in g._node.items() if r.get("mailbox")}
            self._restart_hist = {p: h for p, h in self._restart_hist.items() if p in g}
            self._traces = {p: tr for p, tr in self._traces.items() if p in g}
            # restart budgets: seed with the snapshot's `used` (conservatively, as of now)
            sup_restarts: dict[str, deque[float]] = {}
            for pid, rec in g._node.items():
                b = rec.get("budget")
                if isinstance(b, dict):
                    old_q = self._sup_restarts.get(pid)
                    used = int(b.get("used") or 0)
                    q: deque[float] = deque(old_q) if old_q is not None else deque()
                    period = float(b.get("period") or 5.0)
                    while q and now - q[0] > period:
                        q.popleft()
                    while len(q) < used:
                        q.append(now)
                    while len(q) > used:
                        q.popleft()
                    sup_restarts[pid] = q
            self._sup_restarts = sup_restarts
            order: dict[str, dict[str, int]] = {}
            for pid in g._node:  # pids are sorted: start order, unless we knew better before
                rec = g._node[pid]
                sup, cid = rec.get("supervisor"), rec.get("child_id")
                if sup and cid is not None:
                    prev_order = self._cid_order.get(sup, {})
                    mine = order.setdefault(sup, dict(prev_order))
                    if cid not in mine:
                        mine[cid] = max(mine.values(), default=-1) + 1
            self._cid_order = order
            return [
                Change("reset", None, {"count": g.number_of_nodes(), "seq": self._snap_seq}),
                Change("status", None, {"status": "up"}),
            ]

    def _build(self, procs: list[dict[str, Any]]) -> nx.DiGraph:
        g = nx.DiGraph()
        procs = sorted(procs, key=lambda r: pid_key(str(r.get("pid"))))
        links: list[tuple[str, str]] = []
        mons: list[tuple[str, str]] = []
        items: list[tuple[str, dict[str, Any]]] = []
        for raw in procs:
            rec = self._normalize(raw)
            pid = rec["pid"]
            items.append((pid, rec))
            for o in raw.get("links") or ():
                links.append((pid, str(o)))
            for o in raw.get("monitors") or ():
                mons.append((pid, str(o)))
        g.add_nodes_from(items)
        for pid, rec in g._node.items():
            sup = rec.get("supervisor")
            if sup and sup in g:
                _add_flag(g, sup, pid, "sup")
        for a, b in links:
            if a in g and b in g:
                _add_flag(g, a, b, "link")
                _add_flag(g, b, a, "link")
        for w, tgt in mons:
            if w in g and tgt in g:
                _add_flag(g, w, tgt, "monitor")
        return g

    def _normalize(self, raw: dict[str, Any]) -> dict[str, Any]:
        rec = dict(_DEFAULTS)
        rec.update(raw)
        rec.pop("links", None)
        rec.pop("monitors", None)
        rec["pid"] = str(rec["pid"])
        if rec["trap_exit"] is None:
            # spawn events do not carry trap_exit: supervisors always trap, others unknown
            rec["trap_exit"] = True if rec["kind"] == "supervisor" else None
        rec["rate"] = 0.0
        return rec

    # -- events ------------------------------------------------------------------------------------

    def _event(self, msg: dict[str, Any]) -> list[Change]:
        seq = msg.get("seq")
        if isinstance(seq, int):
            if seq <= self._snap_seq:
                return []  # already reflected in the snapshot
            self._seq = max(self._seq, seq)
        kind = msg.get("ev")
        if kind != "trace":
            # a crash report (up to ~100 KB) lives in the store's crash tables, not
            # 1,000 times over in memory: the recent list keeps a flag
            self._recent.append({**msg, "report": True} if msg.get("report") else msg)
        g = self.graph
        if kind == "spawn":
            pid = str(msg.get("pid"))
            fields = _pick(
                msg, ("name", "label", "parent", "supervisor", "child_id", "kind", "restarts", "trap_exit", "budget")
            )
            if pid in g:
                self._set_fields(pid, fields)
                return [Change("update", pid, fields)]
            rec = self._normalize({"pid": pid, **fields, "started_at": msg.get("time"), "status": "running"})
            g.add_node(pid, **rec)
            sup = rec.get("supervisor")
            if sup and sup in g:
                _add_flag(g, sup, pid, "sup")
                self._note_order(sup, rec.get("child_id"))
            if rec.get("name"):
                self._names[str(rec["name"])] = pid  # a restarted child registers its name again
            return [Change("spawn", pid, _brief(rec))]
        if kind == "exit":
            pid = str(msg.get("pid"))
            if pid not in g:
                return []
            self._forget(pid)
            return [Change("exit", pid, {"reason": msg.get("reason"), "reason_kind": msg.get("reason_kind")})]
        if kind == "restart":
            return self._restart(msg)
        if kind in ("link", "unlink"):
            a, b = str(msg.get("a")), str(msg.get("b"))
            if a not in g or b not in g:
                return []
            if kind == "link":
                _add_flag(g, a, b, "link")
                _add_flag(g, b, a, "link")
            else:
                _remove_flag(g, a, b, "link")
                _remove_flag(g, b, a, "link")
            return [Change(kind, a, {"a": a, "b": b})]
        if kind in ("monitor", "demonitor"):
            w, tgt = msg.get("watcher"), str(msg.get("target"))
            if w is None or w not in g or tgt not in g:
                return []
            if kind == "monitor":
                _add_flag(g, w, tgt, "monitor")
            else:
                _remove_flag(g, w, tgt, "monitor")
            return [Change(kind, w, {"watcher": w, "target": tgt})]
        if kind == "register":
            name, pid_ = msg.get("name"), msg.get("pid")
            if not isinstance(name, str):
                return []
            old = self._names.pop(name, None)
            if old is not None and old in g and g._node[old].get("name") == name:
                g._node[old]["name"] = None
            if pid_ is not None:
                self._names[name] = str(pid_)
                if pid_ in g:
                    g._node[pid_]["name"] = name
            return [Change("register", pid_ or old, {"name": name})]
        if kind in ("suspend", "resume"):
            pid = str(msg.get("pid"))
            if pid not in g:
                return []
            g._node[pid]["status"] = "suspended" if kind == "suspend" else "waiting"
            return [Change(kind, pid, {"status": g._node[pid]["status"]})]
        if kind == "update":
            pid = str(msg.get("pid"))
            if pid not in g:
                return []
            fields = _pick(msg, ("name", "label", "supervisor", "child_id", "kind", "restarts", "trap_exit", "budget"))
            self._set_fields(pid, fields)
            return [Change("update", pid, fields)]
        if kind == "gave_up":
            sup = str(msg.get("supervisor"))
            info = {k: msg.get(k) for k in ("supervisor", "child_id", "restarts", "intensity", "period", "time")}
            self._gave_up.append(info)
            return [Change("gave_up", sup, info)]
        if kind == "trace":
            pid = str(msg.get("pid"))
            tr = self._traces.get(pid)
            if tr is None:
                if pid not in g:
                    return []
                tr = self._traces[pid] = deque(maxlen=TRACE_KEEP)
            tr.append({k: msg.get(k) for k in ("dir", "to", "message", "time", "seq")})
            return [Change("trace", pid, None)]
        if kind == "loop_blocked":
            self._blocked = {k: msg.get(k) for k in ("pid", "name", "blocked_ms", "stack", "time")}
            return [
                Change("loop_blocked", msg.get("pid"), {"blocked_ms": msg.get("blocked_ms"), "name": msg.get("name")})
            ]
        if kind == "loop_unblocked":
            self._blocked = None
            return [Change("loop_unblocked", msg.get("pid"), {"blocked_ms": msg.get("blocked_ms")})]
        return []

    def _set_fields(self, pid: str, fields: dict[str, Any]) -> None:
        g = self.graph
        rec = g._node[pid]
        if "kind" in fields and fields["kind"] == "supervisor":
            rec["trap_exit"] = True
        new_sup = fields.get("supervisor", rec.get("supervisor"))
        old_sup = rec.get("supervisor")
        rec.update(fields)
        if new_sup != old_sup:
            if old_sup and g.has_edge(old_sup, pid):
                _remove_flag(g, old_sup, pid, "sup")
            if new_sup and new_sup in g:
                _add_flag(g, new_sup, pid, "sup")
        if new_sup and "child_id" in fields:
            self._note_order(new_sup, fields["child_id"])
        name = fields.get("name")
        if name:
            self._names[name] = pid

    def _note_order(self, sup: str, cid: Any) -> None:
        if cid is None:
            return
        mine = self._cid_order.setdefault(sup, {})
        if cid not in mine:
            mine[cid] = max(mine.values(), default=-1) + 1

    def _forget(self, pid: str) -> None:
        g = self.graph
        rec = g._node[pid]
        name = rec.get("name")
        if name and self._names.get(name) == pid:
            del self._names[name]
        g.remove_node(pid)
        self._last_in.pop(pid, None)
        self._rate_nonzero.discard(pid)
        self._mailbox_nonzero.discard(pid)
        self._traces.pop(pid, None)
        self._sup_restarts.pop(pid, None)
        self._cid_order.pop(pid, None)
        # restart history stays a little while: a restart event moves it to the new pid
        if len(self._restart_hist) > 2 * g.number_of_nodes() + 1000:
            self._restart_hist = {p: h for p, h in self._restart_hist.items() if p in g}

    def _restart(self, msg: dict[str, Any]) -> list[Change]:
        g = self.graph
        sup = str(msg.get("supervisor"))
        old, new = msg.get("old_pid"), msg.get("new_pid")
        t = msg.get("time") or self._clock()
        entry = {
            "time": t,
            "old_pid": old,
            "new_pid": new,
            "restarts": msg.get("restarts"),
            "child_id": msg.get("child_id"),
        }
        hist = self._restart_hist.pop(old, None) if old else None
        if hist is None:
            hist = deque(maxlen=self._history_len)
        hist.append(entry)
        if new:
            self._restart_hist[new] = hist
            if new in g:
                fields = {"restarts": msg.get("restarts", g._node[new].get("restarts"))}
                if sup in g:
                    fields["supervisor"] = sup
                    if msg.get("child_id") is not None:
                        fields["child_id"] = msg.get("child_id")
                self._set_fields(new, fields)
        if old is not None and sup in g:
            # one budget unit per child exit (a one_for_all group emits one event per child,
            # only the one that triggered it has old_pid)
            self._sup_restarts.setdefault(sup, deque()).append(float(t))
        return [Change("restart", new, entry | {"supervisor": sup})]

    # -- samples -----------------------------------------------------------------------------------

    def _samples(self, msg: dict[str, Any]) -> list[Change]:
        stats = msg.get("node")
        now = float(stats.get("time") or self._clock()) if isinstance(stats, dict) else None
        if now is None:
            now = self._sample_time or self._clock()
        nodes = self.graph._node
        last_in = self._last_in
        seen: set[str] = set()
        nonzero = self._rate_nonzero
        mbz = self._mailbox_nonzero
        for row in msg.get("rows") or ():
            try:
                pid, mailbox, msgs_in, msgs_out, handled, handler_time, status = row[:7]
            except (TypeError, ValueError):
                continue
            rec = nodes.get(pid)
            if rec is None:
                continue
            prev = last_in.get(pid)
            if prev is not None and now > prev[0]:
                rate = max(0, msgs_in - prev[1]) / (now - prev[0])
                rec["rate"] = round(rate, 3)
                if rate > 0:
                    nonzero.add(pid)
                    seen.add(pid)
            last_in[pid] = (now, msgs_in)
            rec["mailbox"] = mailbox
            rec["msgs_in"] = msgs_in
            rec["msgs_out"] = msgs_out
            rec["handled"] = handled
            rec["handler_time"] = handler_time
            rec["status"] = status
            if len(row) > 7 and row[7] is not None:
                rec["memory"] = row[7]
            if mailbox:
                mbz.add(pid)
            else:
                mbz.discard(pid)
        if isinstance(stats, dict):
            # rows only carry processes that changed: the others received nothing
            for pid in nonzero - seen:
                rec = nodes.get(pid)
                if rec is not None:
                    rec["rate"] = 0.0
            self._rate_nonzero = seen
            self._node_stats(stats, now)
        return [Change("samples", None, {"rows": len(msg.get("rows") or ())})]

    def _node_stats(self, stats: dict[str, Any], now: float) -> None:
        prev = self._prev_stats
        self._stats = dict(stats)
        self._sample_time = now
        s = self._series
        s["process_count"].append([now, stats.get("process_count")])
        s["loop_lag_ms"].append([now, stats.get("loop_lag_ms")])
        if prev is not None and now > float(prev.get("time") or 0):
            dt = now - float(prev["time"])
            s["message_rate"].append([now, round(float(stats.get("messages") or 0) / dt, 3)])
            dr = int(stats.get("restarts") or 0) - int(prev.get("restarts") or 0)
            s["restart_rate"].append([now, round(max(0, dr) / dt, 3)])
        nodes = self.graph._node
        top = heapq.nlargest(TOP_MAILBOXES, self._mailbox_nonzero, key=lambda p: nodes[p].get("mailbox") or 0)
        s["top_mailboxes"].append(
            [now, [[p, nodes[p].get("name") or nodes[p].get("label"), nodes[p].get("mailbox")] for p in top]]
        )
        self._prev_stats = self._stats
        horizon = now - self._window
        for q in s.values():
            while q and q[0][0] < horizon:
                q.popleft()

    # -- external facts (from commands) ------------------------------------------------------------

    def merge_info(self, pid: str, info: dict[str, Any]) -> None:
        """Merge the result of an ``info``/``inspect`` command (memory, budget, trap_exit)."""
        with self._lock:
            rec = self.graph._node.get(pid)
            if rec is None:
                return
            for k in ("memory", "trap_exit", "budget", "status", "mailbox"):
                if k in info:
                    rec[k] = info[k]
            b = info.get("budget")
            if isinstance(b, dict):
                q = self._sup_restarts.setdefault(pid, deque())
                used = int(b.get("used") or 0)
                now = self._clock()
                while len(q) > used:
                    q.popleft()
                while len(q) < used:
                    q.appendleft(now)
            children = info.get("children")
            if isinstance(children, list):
                ids = [c.get("id") for c in children if isinstance(c, dict) and c.get("id") is not None]
                if ids:
                    self.set_child_order(pid, ids)

    def set_child_order(self, sup: str, child_ids: list[Any]) -> None:
        """The supervisor's child spec order (from ``inspect``), for rest_for_one previews."""
        with self._lock:
            self._cid_order[sup] = {cid: i for i, cid in enumerate(child_ids)}

    # -- queries: node ------------------------------------------------------------------------------

    def _aggregates(self) -> tuple[dict[str, int], dict[str, int], int]:
        """Counts by status and kind, and the mailbox total: a walk over every
        process (~4.5 ms for 10,000), so computed at most once per
        ``AGGREGATE_MAX_AGE`` seconds (every live batch asks for the summary)."""
        now = time.monotonic()
        cached = self._agg
        if cached is not None and now - cached[0] < AGGREGATE_MAX_AGE:
            return cached[1], cached[2], cached[3]
        by_status: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        mailbox_total = 0
        for _, rec in self.graph._node.items():
            st = rec.get("status") or "?"
            by_status[st] = by_status.get(st, 0) + 1
            k = rec.get("kind") or "worker"
            by_kind[k] = by_kind.get(k, 0) + 1
            mailbox_total += rec.get("mailbox") or 0
        self._agg = (now, by_status, by_kind, mailbox_total)
        return by_status, by_kind, mailbox_total

    def summary(self) -> dict[str, Any]:
        """Health and counts: status up/syncing/down/connecting, last seen, lag, rates."""
        with self._lock:
            g = self.graph
            by_status, by_kind, mailbox_total = self._aggregates()
            mr = self._series["message_rate"]
            rr = self._series["restart_rate"]
            top = self._series["top_mailboxes"]
            return {
                "name": self.name,
                "status": self._status,
                "up": self._status == "up",
                "reason": self._status_reason,
                "node": dict(self._node_meta),
                "last_seen": self._last_seen,
                "connected_at": self._connected_at,
                "down_since": self._down_since,
                "process_count": g.number_of_nodes(),
                "supervisor_count": by_kind.get("supervisor", 0),
                "status_counts": dict(by_status),
                "kind_counts": dict(by_kind),
                "mailbox_total": mailbox_total,
                "loop_lag_ms": self._stats.get("loop_lag_ms"),
                "blocked": dict(self._blocked) if self._blocked else None,
                "message_rate": mr[-1][1] if mr else None,
                "restart_rate": rr[-1][1] if rr else None,
                "time": self._sample_time,
                "top_mailboxes": [list(r) for r in top[-1][1]] if top else [],
                "restarts": self._stats.get("restarts"),
                "crashes": self._stats.get("crashes"),
                "seq": self._seq,
                "snapshots": self._snapshots,
                "gaps": self._gaps,
                "events_dropped": self._dropped,
                "agent_events_dropped": self._stats.get("events_dropped"),
                "last_error": self._last_error,
                "gave_up": list(self._gave_up)[-10:],
            }

    def series(self, since: float | None = None) -> dict[str, list[list[Any]]]:
        """Node time series for charts: ``{name: [[t, value], ...]}`` for ``process_count``,
        ``message_rate``, ``restart_rate``, ``loop_lag_ms`` and ``top_mailboxes``
        (value: ``[[pid, name, mailbox], ...]``)."""
        with self._lock:
            return {k: [list(p) for p in q if since is None or p[0] > since] for k, q in self._series.items()}

    def recent_events(self, limit: int = 100, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The latest events (newest last), optionally of some kinds only."""
        with self._lock:
            ks = set(kinds) if kinds is not None else None
            out = [dict(e) for e in self._recent if ks is None or e.get("ev") in ks]
        return out[-limit:] if limit else out

    def traces(self, pid: str) -> list[dict[str, Any]]:
        """Traced messages of ``pid`` received since tracing started (latest 200)."""
        with self._lock:
            return [dict(x) for x in self._traces.get(pid, ())]

    def names(self) -> dict[str, str]:
        with self._lock:
            return dict(self._names)

    # -- queries: processes ---------------------------------------------------------------------------

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
        """
        if sort not in SORT_KEYS:
            raise ValueError(f"cannot sort by {sort!r}; one of {', '.join(SORT_KEYS)}")
        needle = filter_name.lower() if filter_name else None
        with self._lock:
            recs: list[dict[str, Any]] = []
            for pid, rec in self.graph._node.items():
                if supervisor is not None and rec.get("supervisor") != supervisor:
                    continue
                if status is not None and rec.get("status") != status:
                    continue
                if needle is not None and not (
                    needle in pid
                    or needle in (rec.get("name") or "").lower()
                    or needle in (rec.get("label") or "").lower()
                ):
                    continue
                recs.append(rec)
            total = len(recs)
            key = _sort_key(sort)
            if sort in ("memory",):
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

    def process(self, pid: str) -> dict[str, Any] | None:
        """Everything known about one process: the record, links, monitors (both
        ways), children if a supervisor, restart history, path to the root,
        budget estimate if a supervisor. None if not in the picture."""
        with self._lock:
            g = self.graph
            rec = g._node.get(pid)
            if rec is None:
                return None
            out = dict(rec)
            out["links"] = sorted((v for v, d in g._succ[pid].items() if d.get("link")), key=pid_key)
            out["monitors"] = sorted((v for v, d in g._succ[pid].items() if d.get("monitor")), key=pid_key)
            out["monitored_by"] = sorted((u for u, d in g._pred[pid].items() if d.get("monitor")), key=pid_key)
            out["children"] = self._children(pid)
            out["restart_history"] = list(self._restart_hist.get(pid, ()))
            out["path"] = self._path(pid)
            if rec.get("kind") == "supervisor":
                out["budget_now"] = self._budget(pid)
            return out

    def links(self, pid: str) -> dict[str, Any]:
        """Links and monitors of ``pid`` as edges, for drawing on demand:
        ``{"links": [[a, b]...], "monitors": [[watcher, target]...]}`` (both directions of monitors)."""
        with self._lock:
            g = self.graph
            if pid not in g:
                return {"links": [], "monitors": []}
            links = [[pid, v] for v, d in g._succ[pid].items() if d.get("link")]
            mons = [[pid, v] for v, d in g._succ[pid].items() if d.get("monitor")]
            mons += [[u, pid] for u, d in g._pred[pid].items() if d.get("monitor")]
            return {"links": links, "monitors": mons}

    def path_to_root(self, pid: str) -> list[str]:
        """Supervisor chain from the root down to ``pid`` (inclusive); [] if unknown."""
        with self._lock:
            return self._path(pid)

    def search(self, q: str, limit: int = 50) -> list[dict[str, Any]]:
        """Processes whose pid, name, label or child id contains ``q``, each with its path to the root."""
        needle = q.strip().lower()
        if not needle:
            return []
        with self._lock:
            hits = []
            for pid, rec in self.graph._node.items():
                if (
                    needle in pid
                    or needle in (rec.get("name") or "").lower()
                    or needle in (rec.get("label") or "").lower()
                    or needle in str(rec.get("child_id") or "").lower()
                ):
                    hits.append(pid)
            hits.sort(key=lambda p: (self.graph._node[p].get("name") is None, pid_key(p)))
            out = []
            for pid in hits[:limit]:
                rec = self.graph._node[pid]
                out.append(
                    {
                        "pid": pid,
                        "name": rec.get("name"),
                        "label": rec.get("label"),
                        "kind": rec.get("kind"),
                        "path": self._path(pid),
                    }
                )
            return out

    def _path(self, pid: str) -> list[str]:
        g = self.graph
        if pid not in g:
            return []
        path = [pid]
        seen = {pid}
        cur = pid
        while True:
            sup = g._node[cur].get("supervisor")
            if not sup or sup not in g or sup in seen:
                break
            path.append(sup)
            seen.add(sup)
            cur = sup
        path.reverse()
        return path

    def _children(self, sup: str) -> list[str]:
        """Supervised children of ``sup`` in start (child spec) order."""
        g = self.graph
        kids = [v for v, d in g._succ[sup].items() if d.get("sup")]
        order = self._cid_order.get(sup, {})
        big = 1 << 40
        kids.sort(key=lambda p: (order.get(g._node[p].get("child_id"), big), pid_key(p)))
        return kids

    def _budget(self, sup: str) -> dict[str, Any] | None:
        rec = self.graph._node.get(sup)
        b = rec.get("budget") if rec else None
        if not isinstance(b, dict):
            return None
        period = float(b.get("period") or 5.0)
        now = self._clock()
        q = self._sup_restarts.get(sup, ())
        used = sum(1 for t in q if now - t <= period)
        return {"used": used, "intensity": b.get("intensity"), "period": period, "strategy": b.get("strategy")}

    # -- queries: tree --------------------------------------------------------------------------------

    def tree(self, *, group_threshold: int = 20, expanded: Iterable[str] = ()) -> dict[str, Any]:
        """The supervision forest as one nested dict under a synthetic ``node`` root.

        Each process is ``{"id": pid, "pid", "name", "label", "kind", "status",
        "mailbox", "restarts", "rate", "child_id", "children": [...]}``. Under
        one supervisor (or at the top level), ``group_threshold`` or more
        children with the same label become one group node
        ``{"id": key, "key": key, "group": True, "label", "count",
        "mailbox_total", "restarts_total", "status_counts", "supervisor",
        "sample": [first pids]}`` unless ``key`` (``"<sup pid>/<label>"``, or
        ``"root/<label>"`` at the top) is in ``expanded``. The top node is
        ``{"id": "node", "node": True, "status", "stale", "children": [...]}``;
        ``stale`` is True while the node is down (the last-known tree).
        """
        exp = set(expanded)
        with self._lock:
            g = self.graph
            roots = [p for p in g._node if not any(d.get("sup") for d in g._pred[p].values())]
            roots.sort(key=pid_key)
            top: dict[str, Any] = {
                "id": "node",
                "node": True,
                "label": self._node_meta.get("node_id") or self.name,
                "name": self.name,
                "status": self._status,
                "stale": self._status != "up",
                "children": [],
            }
            work: list[tuple[dict[str, Any], str | None, list[str]]] = [(top, None, roots)]
            while work:
                parent_dict, sup, kids = work.pop()
                out = parent_dict["children"]
                labels: dict[str, list[str]] = {}
                for p in kids:
                    labels.setdefault(str(g._node[p].get("label")), []).append(p)
                grouped = {lb: ps for lb, ps in labels.items() if len(ps) >= group_threshold}
                emitted: set[str] = set()
                for p in kids:
                    rec = g._node[p]
                    lb = str(rec.get("label"))
                    if lb in grouped:
                        key = f"{sup or 'root'}/{lb}"
                        if key not in exp:
                            if lb not in emitted:
                                emitted.add(lb)
                                out.append(self._group(key, sup, rec.get("label"), grouped[lb]))
                            continue
                    d = _tree_node(p, rec)
                    if lb in grouped:
                        d["group_key"] = f"{sup or 'root'}/{lb}"
                    out.append(d)
                    sub = [v for v, ed in g._succ[p].items() if ed.get("sup")]
                    if sub:
                        work.append((d, p, self._children(p)))
            return top

    def _group(self, key: str, sup: str | None, label: Any, pids: list[str]) -> dict[str, Any]:
        nodes = self.graph._node
        status_counts: dict[str, int] = {}
        mailbox = restarts = 0
        rate = 0.0
        for p in pids:
            r = nodes[p]
            st = r.get("status") or "?"
            status_counts[st] = status_counts.get(st, 0) + 1
            mailbox += r.get("mailbox") or 0
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
            "mailbox_max": max((nodes[p].get("mailbox") or 0) for p in pids),
            "restarts_total": restarts,
            "rate_total": round(rate, 3),
            "status_counts": status_counts,
            "sample": pids[:5],
            "children": [],
        }

    @staticmethod
    def tidy_layout(tree: dict[str, Any], *, dx: float = 1.0, dy: float = 1.0) -> dict[str, Any]:
        """See the module-level :func:`tidy_layout` (no lock needed: works on a tree copy)."""
        return tidy_layout(tree, dx=dx, dy=dy)

    # -- kill preview ---------------------------------------------------------------------------------

    def kill_preview(self, pid: str, reason: str = "kill", *, limit: int = 1000) -> dict[str, Any]:
        """What killing ``pid`` with ``reason`` would do, reasoned from the picture.

        Follows the runtime's rules: ``kill`` cannot be trapped by the target;
        other reasons are delivered as a message to a target that traps exits
        (it survives) and ignored by a non-trapping one if ``normal``. A dying
        process sends its reason down every link: non-trapping processes die
        (unless the reason is ``normal``), trapping ones get a message and
        survive; a supervisor receiving a child's exit restarts by its strategy
        (one_for_one: just it; one_for_all: every sibling; rest_for_one: the
        siblings started after it), unless ``used + 1 > intensity``, in which
        case it gives up: it exits with ``shutdown``, its subtree goes, and its
        own supervisor reacts (escalation). A supervisor that dies takes its
        whole subtree with it.

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
            return _KillSim(self, pid, reason).run(limit)

    # used by _KillSim (lock held)
    def _links_of(self, pid: str) -> list[str]:
        g = self.graph
        out = [v for v, d in g._succ[pid].items() if d.get("link") or d.get("sup")]
        out += [u for u, d in g._pred[pid].items() if d.get("sup") and not g._succ[pid].get(u, {}).get("link")]
        return out


class _KillSim:
    def __init__(self, model: NodeModel, target: str, reason: str) -> None:
        self.m = model
        self.g = model.graph
        self.target = target
        self.reason = reason
        self.dead: dict[str, str] = {}
        self.how: dict[str, str] = {}
        self.notified: dict[str, str] = {}
        self.restarts: list[dict[str, Any]] = []
        self.gives_up: list[dict[str, Any]] = []
        self.used: dict[str, int] = {}
        self.ignored: dict[str, set[str]] = {}
        self.queue: deque[tuple[str, str | None, str, bool]] = deque()
        self.warnings: list[str] = []
        self.unknown_trap: set[str] = set()

    def traps(self, pid: str) -> bool:
        rec = self.g._node[pid]
        if rec.get("kind") == "supervisor":
            return True
        t = rec.get("trap_exit")
        if t is None:
            self.unknown_trap.add(pid)
            return False
        return bool(t)

    def sup_of(self, pid: str) -> str | None:
        s = self.g._node[pid].get("supervisor")
        return s if s and s in self.g else None

    def die(self, pid: str, reason: str, how: str) -> None:
        if pid in self.dead:
            return
        self.dead[pid] = reason
        self.how[pid] = how
        self.notified.pop(pid, None)
        if self.g._node[pid].get("kind") == "supervisor":
            ign = self.ignored.setdefault(pid, set())
            for child in reversed(self.m._children(pid)):
                ign.add(child)
                self.die(child, "shutdown", "subtree")
        for other in self.m._links_of(pid):
            self.queue.append((other, pid, reason, True))

    def signal(self, t: str, sender: str | None, reason: str, link: bool) -> None:
        if t in self.dead:
            return
        if reason == "kill" and not link:
            self.die(t, "killed", "target")
            return
        if self.traps(t):
            if sender is not None and self.sup_of(sender) == t:
                self.child_exit(t, sender, reason)
            elif sender is not None and self.sup_of(t) == sender:
                self.die(t, reason, "subtree")  # a gen_server/supervisor stops with its parent
            elif sender is None:
                self.notified[t] = "(operator)"
            else:
                self.notified[t] = sender
            return
        if reason == "normal":
            return
        self.die(t, reason, "target" if sender is None else "link")

    def child_exit(self, sup: str, child: str, reason: str) -> None:
        if sup in self.dead or child in self.ignored.get(sup, set()):
            return
        rec = self.g._node[sup]
        budget = self.m._budget(sup) or {"used": 0, "intensity": 1, "period": 5.0, "strategy": "one_for_one"}
        if sup not in self.used:
            self.used[sup] = int(budget.get("used") or 0)
        if reason in ("normal", "shutdown") and child == self.target:
            self.warnings.append(f"{child} exits {reason}: restarted only if its restart type is permanent (assumed)")
        self.used[sup] += 1
        raw_int = budget.get("intensity")
        intensity = int(raw_int) if raw_int is not None else 1
        if self.used[sup] > intensity:
            self.gives_up.append(
                {
                    "supervisor": sup,
                    "name": rec.get("name") or rec.get("label"),
                    "used": self.used[sup] - 1,
                    "intensity": intensity,
                    "period": budget.get("period"),
                    "trigger": child,
                }
            )
            self.die(sup, "shutdown", "gave_up")
            return
        strategy = str(budget.get("strategy") or "one_for_one")
        kids = self.m._children(sup)
        if strategy == "one_for_all":
            group = kids
        elif strategy == "rest_for_one" and child in kids:
            group = kids[kids.index(child) :]
        else:
            group = [child]
        ign = self.ignored.setdefault(sup, set())
        for other in reversed(group):
            if other != child:
                ign.add(other)
                self.die(other, "shutdown", "restart")
        self.restarts.append(
            {
                "supervisor": sup,
                "name": rec.get("name") or rec.get("label"),
                "strategy": strategy,
                "trigger": child,
                "restarted": group,
                "used_after": self.used[sup],
                "intensity": intensity,
            }
        )

    def run(self, limit: int) -> dict[str, Any]:
        g = self.g
        if self.target not in g:
            return {
                "target": self.target,
                "exists": False,
                "reason": self.reason,
                "target_dies": False,
                "down": [],
                "warnings": ["no such process in the picture"],
            }
        rec = g._node[self.target]
        self.queue.append((self.target, None, self.reason, False))
        steps = 0
        while self.queue:
            t, sender, reason, link = self.queue.popleft()
            self.signal(t, sender, reason, link)
            steps += 1
            if steps > 5_000_000:  # pragma: no cover - a safety net
                self.warnings.append("preview truncated")
                break
        is_sup = rec.get("kind") == "supervisor"
        subtree = _descendants(self.m, self.target) if is_sup else []
        down = list(self.dead)
        linked_down = [p for p in down if self.how[p] == "link"]
        if self.unknown_trap & set(down):
            self.warnings.append(
                f"{len(self.unknown_trap & set(down))} process(es) spawned after the snapshot have an unknown "
                "trap_exit flag and were assumed not to trap exits"
            )
        sup = self.sup_of(self.target)
        return {
            "target": self.target,
            "exists": True,
            "reason": self.reason,
            "name": rec.get("name") or rec.get("label"),
            "target_dies": self.target in self.dead,
            "is_supervisor": is_sup,
            "subtree": subtree[:limit],
            "subtree_count": len(subtree),
            "down": down[:limit],
            "down_count": len(down),
            "linked_down": linked_down[:limit],
            "linked_down_count": len(linked_down),
            "notified": sorted(self.notified, key=pid_key)[:limit],
            "restarts": [
                r | {"restarted": r["restarted"][:limit], "restarted_count": len(r["restarted"])} for r in self.restarts
            ],
            "gives_up": self.gives_up,
            "escalation": [x["supervisor"] for x in self.gives_up],
            "budget": self.m._budget(sup) if sup else None,
            "supervisor": sup,
            "warnings": self.warnings,
        }


def _descendants(model: NodeModel, pid: str) -> list[str]:
    out: list[str] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        kids = model._children(p)
        out.extend(kids)
        stack.extend(reversed(kids))
    return out


def _tree_node(pid: str, rec: dict[str, Any]) -> dict[str, Any]:
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


def _pick(msg: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: msg[k] for k in keys if k in msg}


def _brief(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in ("name", "label", "kind", "supervisor", "child_id")}


def _add_flag(g: nx.DiGraph, u: str, v: str, flag: str) -> None:
    d = g._succ[u].get(v)
    if d is None:
        g.add_edge(u, v)
        d = g._succ[u][v]
    if flag == "monitor":
        d["monitor"] = int(d.get("monitor") or 0) + 1
    else:
        d[flag] = True
    d["kind"] = _flags_kind(d)


def _remove_flag(g: nx.DiGraph, u: str, v: str, flag: str) -> None:
    d = g._succ[u].get(v) if u in g else None
    if d is None:
        return
    if flag == "monitor":
        n = int(d.get("monitor") or 0) - 1
        if n > 0:
            d["monitor"] = n
        else:
            d.pop("monitor", None)
    else:
        d.pop(flag, None)
    k = _flags_kind(d)
    if k is None:
        g.remove_edge(u, v)
    else:
        d["kind"] = k


def _sort_key(sort: str) -> Any:
    if sort == "pid":
        return lambda r: pid_key(r["pid"])
    if sort == "name":
        return lambda r: ((r.get("name") or r.get("label") or "").lower(), pid_key(r["pid"]))
    if sort in ("label", "status"):
        return lambda r: (str(r.get(sort) or "").lower(), pid_key(r["pid"]))
    return lambda r: r.get(sort) or 0


def tidy_layout(tree: dict[str, Any], *, dx: float = 1.0, dy: float = 1.0) -> dict[str, Any]:
    """Positions for a tree from :meth:`NodeModel.tree`: leaves left to right in
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

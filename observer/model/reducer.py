"""The reducer: the one place where messages are folded into a node's :class:`State`.

``reduce(state, msg, now) -> (state, changes)`` is used by the live model
(:class:`~observer.model.NodeModel`), by the history writer for its
checkpoints and by time travel (:func:`observer.model.history.replay`), so
the picture at an instant is the same whichever of them computes it.

It is a function of its arguments only: no clock (``now`` is the time the
message was received), no I/O, no lock, no globals. It owns the state it is
given: for an event it updates it in place and returns it (copying a
100,000-process graph per event is out of the question); for ``snapshot_end``
it returns a *new* state and leaves the old one untouched, so the facade can
build it while readers go on with the old one. Either way the caller keeps
only what it gets back.

Messages
    From the agent: ``snapshot_begin``/``snapshot_chunk``/``snapshot_end``,
    ``ev`` (``spawn``, ``exit``, ``restart``, ``link``, ``unlink``, ``monitor``,
    ``demonitor``, ``register``, ``update``, ``suspend``, ``resume``,
    ``gave_up``, ``trace``, ``loop_blocked``, ``loop_unblocked``), ``samples``,
    ``gap``, ``error``. From the observer itself: ``status`` (``down``, or any
    other value: attached, syncing until the snapshot arrives -- the history
    store records ``up`` there), ``info`` (facts from an ``inspect``/``info``
    command) and ``child_order`` (a supervisor's child spec order). Anything
    else is ignored.

Idempotence
    Events already reflected in the snapshot (``seq`` at or below the
    snapshot's) are ignored; a ``spawn`` of a known pid updates it, an
    ``exit`` of an unknown pid does nothing, so a replay is harmless.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from . import rates
from .snapshot import no_gc, normalize, prepare, replace_picture
from .state import Change, State, add_flag, link_pair, pid_key, remove_flag, unlink_pair

__all__ = ["reduce"]

_SPAWN_FIELDS = ("name", "label", "parent", "supervisor", "child_id", "kind", "restarts", "trap_exit", "budget")
_UPDATE_FIELDS = ("name", "label", "supervisor", "child_id", "kind", "restarts", "trap_exit", "budget")

_Handler = Callable[[State, dict[str, Any], float], list[Change]]


def reduce(state: State, msg: dict[str, Any], now: float) -> tuple[State, list[Change]]:
    """Fold one message into ``state``; returns the state to keep and what changed."""
    t = msg.get("t")
    if t == "snapshot_end":
        return replace_picture(state, msg, now)
    handler = _MESSAGES.get(t)  # type: ignore[arg-type]
    if handler is None:
        return state, []
    return state, handler(state, msg, now)


# -- messages --------------------------------------------------------------------------------------


def _ev(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.last_seen = now
    seq = msg.get("seq")
    if isinstance(seq, int):
        if seq <= state.snap_seq:
            return []  # already reflected in the snapshot
        if seq > state.seq:
            state.seq = seq
    kind = msg.get("ev")
    if kind != "trace":
        # a crash report (up to ~100 KB) lives in the store's crash tables, not
        # 1,000 times over in memory: the recent list keeps a flag
        state.recent.append({**msg, "report": True} if msg.get("report") else msg)
    handler = _EVENTS.get(kind)  # type: ignore[arg-type]
    return handler(state, msg, now) if handler is not None else []


def _samples(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.last_seen = now
    return rates.fold_samples(state, msg, now)


def _snapshot_begin(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.last_seen = now
    state.pending_begin = msg
    state.pending = []
    return []


def _snapshot_chunk(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.last_seen = now
    if state.pending is not None:
        with no_gc():
            # records as the wire has them, or already prepare()-d (the history writer's queue
            # holds them so: see observer.store.HistoryStore.record)
            state.pending.extend(r if r.__class__ is tuple else prepare(r) for r in msg.get("procs") or ())
    return []


def _gap(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.last_seen = now
    n = int(msg.get("dropped") or 0)
    state.gaps += 1
    state.dropped += n
    return [Change("gap", None, {"dropped": n})]


def _error(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.last_seen = now
    state.last_error = f"{msg.get('code')}: {msg.get('message')}"
    return [Change("error", None, {"code": msg.get("code"), "message": msg.get("message")})]


def _status(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.pending = None
    state.pending_begin = None
    if msg.get("status") == "down":
        reason = msg.get("reason")
        if state.status != "down":
            state.down_since = now
        state.status = "down"
        state.status_reason = reason
        state.blocked = None
        rates.stopped(state)
        return [Change("status", None, {"status": "down", "reason": reason})]
    node = msg.get("node")
    if isinstance(node, dict):
        state.node_meta = dict(node)
    for k in ("session", "role"):
        if k in msg:
            state.node_meta[k] = msg[k]
    if "commands" in msg:
        state.node_meta["commands"] = list(msg["commands"] or [])
    state.status = "syncing"
    state.status_reason = None
    state.connected_at = now
    state.last_seen = now
    return [Change("status", None, {"status": "syncing"})]


def _info(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    pid = str(msg.get("pid"))
    info = msg.get("info")
    rec = state.graph._node.get(pid)
    if rec is None or not isinstance(info, dict):
        return []
    for k in ("memory", "trap_exit", "budget", "status", "mailbox"):
        if k in info:
            rec[k] = info[k]
    b = info.get("budget")
    if isinstance(b, dict):
        q = state.sup_restarts.setdefault(pid, deque())
        used = int(b.get("used") or 0)
        while len(q) > used:
            q.popleft()
        while len(q) < used:
            q.appendleft(now)
    children = info.get("children")
    if isinstance(children, list):
        ids = [c.get("id") for c in children if isinstance(c, dict) and c.get("id") is not None]
        if ids:
            state.cid_order[pid] = _positions(ids)
    return []


def _child_order(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.cid_order[str(msg.get("supervisor"))] = _positions(msg.get("ids") or ())
    return []


def _positions(ids: Iterable[Any]) -> dict[Any, int]:
    """Child id -> its position (0..n-1; a repeated id keeps its first)."""
    return {cid: i for i, cid in enumerate(dict.fromkeys(ids))}


_MESSAGES: dict[str, _Handler] = {
    "ev": _ev,
    "samples": _samples,
    "snapshot_begin": _snapshot_begin,
    "snapshot_chunk": _snapshot_chunk,
    "gap": _gap,
    "error": _error,
    "status": _status,
    "info": _info,
    "child_order": _child_order,
}


# -- events ----------------------------------------------------------------------------------------


def _spawn(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    g = state.graph
    pid = str(msg.get("pid"))
    fields = {k: msg[k] for k in _SPAWN_FIELDS if k in msg}
    if pid in g:
        _set_fields(state, pid, fields)
        return [Change("update", pid, fields)]
    rec = normalize({"pid": pid, **fields, "started_at": msg.get("time"), "status": "running"})
    pid = rec["pid"]
    if state.pid_ordered and g._node and pid_key(pid) < pid_key(next(reversed(g._node))):
        state.pid_ordered = False
    g.add_node(pid, **rec)
    sup = rec.get("supervisor")
    if sup and sup in g:
        add_flag(g, sup, pid, "sup")
        _note_order(state, sup, rec.get("child_id"))
    if rec.get("name"):
        state.names[str(rec["name"])] = pid  # a restarted child registers its name again
    brief = {k: rec.get(k) for k in ("name", "label", "kind", "supervisor", "child_id")}
    return [Change("spawn", pid, brief)]


def _exit(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    g = state.graph
    pid = str(msg.get("pid"))
    rec = g._node.get(pid)
    if rec is None:
        return []
    name = rec.get("name")
    if name and state.names.get(name) == pid:
        del state.names[name]
    g.remove_node(pid)
    rates.forget(state.rates, pid)
    state.traces.pop(pid, None)
    state.sup_restarts.pop(pid, None)
    state.cid_order.pop(pid, None)
    # restart history stays a little while: a restart event moves it to the new pid
    if len(state.restart_hist) > 2 * g.number_of_nodes() + 1000:
        state.restart_hist = {p: h for p, h in state.restart_hist.items() if p in g}
    return [Change("exit", pid, {"reason": msg.get("reason"), "reason_kind": msg.get("reason_kind")})]


def _restart(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    g = state.graph
    sup = str(msg.get("supervisor"))
    old, new = msg.get("old_pid"), msg.get("new_pid")
    t = msg.get("time") or now
    entry = {
        "time": t,
        "old_pid": old,
        "new_pid": new,
        "restarts": msg.get("restarts"),
        "child_id": msg.get("child_id"),
    }
    hist = state.restart_hist.pop(old, None) if old else None
    if hist is None:
        hist = deque(maxlen=state.history_len)
    hist.append(entry)
    if new:
        state.restart_hist[new] = hist
        if new in g:
            fields = {"restarts": msg.get("restarts", g._node[new].get("restarts"))}
            if sup in g:
                fields["supervisor"] = sup
                if msg.get("child_id") is not None:
                    fields["child_id"] = msg.get("child_id")
            _set_fields(state, new, fields)
    if old is not None and sup in g:
        # one budget unit per child exit (a one_for_all group emits one event per child,
        # only the one that triggered it has old_pid)
        state.sup_restarts.setdefault(sup, deque()).append(float(t))
    return [Change("restart", new, entry | {"supervisor": sup})]


def _link(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    g = state.graph
    kind = str(msg.get("ev"))
    a, b = str(msg.get("a")), str(msg.get("b"))
    if a not in g or b not in g:
        return []
    if kind == "link":
        link_pair(g, a, b)
    else:
        unlink_pair(g, a, b)
    return [Change(kind, a, {"a": a, "b": b})]


def _monitor(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    g = state.graph
    kind = str(msg.get("ev"))
    w, tgt = msg.get("watcher"), str(msg.get("target"))
    if w is None or w not in g or tgt not in g:
        return []
    if kind == "monitor":
        add_flag(g, w, tgt, "monitor")
    else:
        remove_flag(g, w, tgt, "monitor")
    return [Change(kind, w, {"watcher": w, "target": tgt})]


def _register(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    g = state.graph
    name, pid = msg.get("name"), msg.get("pid")
    if not isinstance(name, str):
        return []
    old = state.names.pop(name, None)
    if old is not None and old in g and g._node[old].get("name") == name:
        g._node[old]["name"] = None
    if pid is not None:
        state.names[name] = str(pid)
        if pid in g:
            g._node[pid]["name"] = name
    return [Change("register", pid or old, {"name": name})]


def _suspend(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    pid = str(msg.get("pid"))
    rec = state.graph._node.get(pid)
    if rec is None:
        return []
    kind = str(msg.get("ev"))
    rec["status"] = "suspended" if kind == "suspend" else "waiting"
    return [Change(kind, pid, {"status": rec["status"]})]


def _update(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    pid = str(msg.get("pid"))
    if pid not in state.graph:
        return []
    fields = {k: msg[k] for k in _UPDATE_FIELDS if k in msg}
    _set_fields(state, pid, fields)
    return [Change("update", pid, fields)]


def _gave_up(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    info = {k: msg.get(k) for k in ("supervisor", "child_id", "restarts", "intensity", "period", "time")}
    state.gave_up.append(info)
    return [Change("gave_up", str(msg.get("supervisor")), info)]


def _trace(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    pid = str(msg.get("pid"))
    tr = state.traces.get(pid)
    if tr is None:
        if pid not in state.graph or not state.trace_keep:
            return []
        tr = state.traces[pid] = deque(maxlen=state.trace_keep)
    tr.append({k: msg.get(k) for k in ("dir", "to", "message", "time", "seq")})
    return [Change("trace", pid, None)]


def _loop_blocked(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.blocked = {k: msg.get(k) for k in ("pid", "name", "blocked_ms", "stack", "time")}
    return [Change("loop_blocked", msg.get("pid"), {"blocked_ms": msg.get("blocked_ms"), "name": msg.get("name")})]


def _loop_unblocked(state: State, msg: dict[str, Any], now: float) -> list[Change]:
    state.blocked = None
    return [Change("loop_unblocked", msg.get("pid"), {"blocked_ms": msg.get("blocked_ms")})]


_EVENTS: dict[str, _Handler] = {
    "spawn": _spawn,
    "exit": _exit,
    "restart": _restart,
    "link": _link,
    "unlink": _link,
    "monitor": _monitor,
    "demonitor": _monitor,
    "register": _register,
    "suspend": _suspend,
    "resume": _suspend,
    "update": _update,
    "gave_up": _gave_up,
    "trace": _trace,
    "loop_blocked": _loop_blocked,
    "loop_unblocked": _loop_unblocked,
}


def _set_fields(state: State, pid: str, fields: dict[str, Any]) -> None:
    g = state.graph
    rec = g._node[pid]
    if fields.get("kind") == "supervisor":
        rec["trap_exit"] = True
    old_sup = rec.get("supervisor")
    new_sup = fields.get("supervisor", old_sup)
    rec.update(fields)
    if new_sup != old_sup:
        if old_sup and g.has_edge(old_sup, pid):
            remove_flag(g, old_sup, pid, "sup")
        if new_sup and new_sup in g:
            add_flag(g, new_sup, pid, "sup")
    if new_sup and "child_id" in fields:
        _note_order(state, new_sup, fields["child_id"])
    name = fields.get("name")
    if name:
        state.names[name] = pid


def _note_order(state: State, sup: str, cid: Any) -> None:
    if cid is None:
        return
    mine = state.cid_order.setdefault(sup, {})
    if cid not in mine:
        mine[cid] = len(mine)  # positions are 0..n-1: the next one is n

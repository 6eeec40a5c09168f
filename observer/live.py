"""Live pushes to browsers: the ``/live`` Socket.IO namespace and the batcher.

:class:`LiveHub` collects the model's changes (from
:meth:`observer.attach.AttachManager.on_change`) and a background task sends
at most one ``batch`` message per node room every ``interval`` seconds
(lifecycle changes: ``urgent_gap`` after the last batch that carried any),
changes coalesced per process; ``node_status`` goes out when a node goes down
or comes back.

Beside the node rooms there are **feeds**, one room each (:data:`FEEDS`):
``crashes`` (a crash report was stored), ``audit`` (an audit row or its
result was written), ``chaos`` (an experiment's progress) and ``cluster``
(a node was added or removed). Producers call :meth:`LiveHub.publish`
(the store's commit listener :meth:`LiveHub.on_commit`, the chaos service,
the cluster routes, the trace service's arrows: observer/trace.py); at most one ``feed`` message per feed goes out every
``urgent_gap``: ``{"feed", "items": [...], "truncated"?}``. An item given a
``key`` replaces the pending one with the same key, and may be a function
called when the message goes out (the chaos journal's head is read then,
not at every kill).

:class:`LiveNamespace` is the thin namespace class: connect (session cookie,
Host and Origin checked), ``subscribe`` (``{"node", "view"}`` joins a node's
room, ``{"feed"}`` a feed's; ``ack`` either way), disconnect.

Threading rules
    :meth:`LiveHub.on_change` runs on the attach loop thread,
    :meth:`LiveHub.on_commit` on the store's writer thread, :meth:`LiveHub.publish`
    on any: they only append under a short lock and never emit. Everything that emits runs in
    the background task started with ``socketio.start_background_task`` and
    sleeps with ``socketio.sleep``, so the same code serves threading and
    eventlet modes. The namespace handlers run on Socket.IO's handler threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import request, session
from flask_socketio import Namespace, SocketIO, join_room, leave_room

from .model import Change
from .permissions import who
from .security import check_origin, is_logged_in, session_of

__all__ = ["FEEDS", "NAMESPACE", "LiveHub", "LiveNamespace", "coalesce", "feed_room", "room_of"]

log = logging.getLogger("observer.live")

NAMESPACE = "/live"
VIEWS = frozenset({"overview", "tree", "processes", "events", "process"})
FEEDS = frozenset({"crashes", "audit", "chaos", "cluster", "trace"})
"""Rooms not tied to a node (see the module docstring)."""
FEED_GRANTS = {"trace": frozenset({"inspect", "trace"})}
"""Feeds that carry what a process holds (messages): only for logins granted one of these."""
FEED_CAP = 1000
"""Items one ``feed`` message carries at most; beyond that it says ``truncated`` (the browser refetches)."""
MAX_CHANGES = 2000
"""Changes per batch; beyond that the batch says ``truncated`` (the browser refetches)."""
_MERGED = frozenset({"update", "status", "suspend", "resume", "register"})
"""Per-process kinds where only the latest (merged) state matters."""


def room_of(node: str) -> str:
    return f"node:{node}"


def feed_room(feed: str) -> str:
    return f"feed:{feed}"


FeedItem = dict[str, Any] | Callable[[], dict[str, Any]]
"""A feed item, or a function giving it when the message goes out."""


def coalesce(changes: list[Change]) -> tuple[list[dict[str, Any]], int]:
    """Coalesce per process: state changes (``update``, ``status``, ...) of one
    pid merge into one entry at its latest position, ``samples`` collapse into
    one, anything before the last ``reset`` but node-level status goes.
    Lifecycle events (spawn, exit, restart, gave_up, link, ...) are kept in
    order. Returns ``(changes as dicts, how many were cut beyond MAX_CHANGES)``."""
    last_reset = max((i for i, c in enumerate(changes) if c.kind == "reset"), default=-1)
    if last_reset > 0:
        changes = [c for c in changes[:last_reset] if c.pid is None and c.kind != "samples"] + changes[last_reset:]
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[tuple[str, str] | int] = []
    singles: list[dict[str, Any]] = []
    sample_rows = 0
    samples = False
    for c in changes:
        if c.kind == "samples":
            samples = True
            sample_rows += int((c.data or {}).get("rows") or 0)
            continue
        if c.pid is not None and c.kind in _MERGED:
            key = (c.kind, c.pid)
            prev = merged.pop(key, None)
            data = {**((prev or {}).get("data") or {}), **(c.data or {})}
            merged[key] = {"kind": c.kind, "pid": c.pid, "data": data}
            if prev is not None:
                order.remove(key)
            order.append(key)
            continue
        singles.append(c.as_dict())
        order.append(len(singles) - 1)
    out = [merged[k] if isinstance(k, tuple) else singles[k] for k in order]
    if samples:
        out.append({"kind": "samples", "pid": None, "data": {"rows": sample_rows}})
    cut = max(0, len(out) - MAX_CHANGES)
    return (out[-MAX_CHANGES:] if cut else out), cut


_EVENTS = frozenset({"connect", "disconnect", "subscribe"})
"""The Socket.IO events ``/live`` handles; any other is refused and audited."""

URGENT = frozenset({"spawn", "exit", "restart", "gave_up", "status", "loop_blocked", "reset", "gap"})
"""Change kinds pushed within ``urgent_gap`` rather than at the next ``interval``."""


class LiveHub:
    """Batches model changes per node and pushes them to the node's room.

    ``stats_of(node)`` gives the node's latest counters (the model's summary).
    ``socketio.emit`` is called only from the hub's own background task."""

    def __init__(
        self,
        socketio: SocketIO,
        stats_of: Any,
        *,
        interval: float = 0.25,
        urgent_gap: float = 0.05,
        tick: float = 0.005,
        idle_tick: float = 0.05,
    ) -> None:
        self.socketio = socketio
        self.interval = interval
        self.urgent_gap = urgent_gap
        self.tick = tick
        """How often the task looks for due batches while some browser watches
        a node (a crash waits on average half of it before it can go out)."""
        self.idle_tick = idle_tick
        """... and while nobody watches (only ``node_status`` to send)."""
        self._last_sent: dict[str, float] = {}
        self._last_urgent: dict[str, float] = {}
        self._stats_of = stats_of
        self._lock = threading.Lock()
        self._pending: dict[str, list[Change]] = {}
        self._status: dict[str, str] = {}
        self._seq: dict[str, int] = {}
        self._subscribers: dict[str, int] = {}
        self._feeds: dict[str, dict[Any, FeedItem]] = {}
        self._feed_cut: dict[str, int] = {}
        self._feed_seq = 0
        self._feed_subscribers: dict[str, int] = {}
        self._last_feed = 0.0
        self._running = False
        self._stopped = threading.Event()
        self.batches_sent = 0
        self.changes_seen = 0
        self.shared = False
        """With a message queue shared by several servers: push every node's
        batches, whether or not this server has a subscriber (another may)."""
        self.publishes_nodes = True
        """Whether this server pushes what every server sharing the message queue
        sees alike (node batches, crash reports); each pushes its own audit rows,
        experiments and node changes."""

    # -- producer side (attach loop thread) ------------------------------------------------------

    def on_change(self, node: str, changes: list[Change]) -> None:
        """AttachManager listener: queue, never emit (runs on the attach loop)."""
        with self._lock:
            self._pending.setdefault(node, []).extend(changes)
            self.changes_seen += len(changes)

    def publish(self, feed: str, item: FeedItem, *, key: Any = None) -> None:
        """Queue ``item`` for the browsers following ``feed`` (any thread; never emits).
        With ``key``, it replaces a pending item with the same key."""
        if feed not in FEEDS:
            raise ValueError(f"unknown feed {feed!r}; one of {', '.join(sorted(FEEDS))}")
        with self._lock:
            items = self._feeds.setdefault(feed, {})
            if key is None:
                self._feed_seq += 1
                key = ("item", self._feed_seq)
            else:
                items.pop(key, None)  # to the end: the latest state goes out last
            items[key] = item
            if len(items) > FEED_CAP:
                del items[next(iter(items))]
                self._feed_cut[feed] = self._feed_cut.get(feed, 0) + 1

    def on_commit(self, kind: str, row: dict[str, Any]) -> None:
        """History store listener (writer thread): audit rows and results go to
        the ``audit`` feed, crash reports to ``crashes``."""
        if kind in ("audit", "audit_result"):
            self.publish("audit", {"kind": kind, "row": row})
        elif kind == "crash" and self.publishes_nodes:
            self.publish("crashes", row)

    # -- subscribers (handler threads) -----------------------------------------------------------

    def subscribed(self, node: str, delta: int) -> None:
        with self._lock:
            _count(self._subscribers, node, delta)

    def subscribed_feed(self, feed: str, delta: int) -> None:
        with self._lock:
            _count(self._feed_subscribers, feed, delta)

    # -- the background task ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the pushing task (idempotent)."""
        with self._lock:
            if self._running:
                return
            self._running = True
        self.socketio.start_background_task(self._run)

    def stop(self) -> None:
        with self._lock:
            self._running = False

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._running:
                        return
                try:
                    self.flush(due_only=True)
                except Exception:  # a bad batch must not stop the pushes
                    log.exception("observer: live batch failed")
                watched = self._subscribers or self._feed_subscribers
                self.socketio.sleep(self.tick if watched else self.idle_tick)
        finally:
            self._stopped.set()

    def _due(self, node: str, changes: list[Change], now: float) -> bool:
        """Counters go out every ``interval``; a lifecycle change (a crash, a
        restart, a node going down) once ``urgent_gap`` has passed since the
        node's last batch, so that it reaches the screen well within 100 ms
        while a storm of them still makes at most 1/urgent_gap messages a second."""
        if now - self._last_sent.get(node, 0.0) >= self.interval:
            return True
        # the gap counts from the last batch that carried lifecycle changes: a
        # counters-only batch just before a crash does not hold the crash back
        return now - self._last_urgent.get(node, 0.0) >= self.urgent_gap and any(c.kind in URGENT for c in changes)

    def flush(self, *, due_only: bool = False) -> int:
        """Send what is pending (one ``batch`` per node); returns messages sent.
        With ``due_only``, only the nodes whose batch is due (see :meth:`_due`)."""
        now = time.monotonic()
        with self._lock:
            if due_only:
                pending = {n: c for n, c in self._pending.items() if self._due(n, c, now)}
                for n in pending:
                    del self._pending[n]
            else:
                pending, self._pending = self._pending, {}
            watched = set(self._subscribers)
            feeds: dict[str, dict[Any, FeedItem]] = {}
            cuts: dict[str, int] = {}
            followed: set[str] = set()
            if self._feeds and (not due_only or now - self._last_feed >= self.urgent_gap):
                feeds, self._feeds = self._feeds, {}
                cuts, self._feed_cut = self._feed_cut, {}
                self._last_feed = now
                followed = set(self._feed_subscribers)
        sent = self._flush_feeds(feeds, cuts, followed) if feeds else 0
        for node, changes in pending.items():
            self._last_sent[node] = now
            if any(c.kind in URGENT for c in changes):
                self._last_urgent[node] = now
        for node, changes in pending.items():
            for c in changes:
                if c.kind == "status" and c.pid is None:
                    st = str((c.data or {}).get("status"))
                    if st in ("up", "down") and self._status.get(node) != st:
                        self._status[node] = st
                        self.socketio.emit(
                            "node_status", {"node": node, "status": st}, namespace=NAMESPACE, to=room_of(node)
                        )
                        sent += 1
            if node not in watched and not self.shared:
                continue
            out, cut = coalesce(changes)
            seq = self._seq.get(node, 0) + 1
            self._seq[node] = seq
            msg: dict[str, Any] = {"node": node, "seq": seq, "changes": out, "stats": self._stats_of(node)}
            if cut:
                msg["truncated"] = cut
            self.socketio.emit("batch", msg, namespace=NAMESPACE, to=room_of(node))
            self.batches_sent += 1
            sent += 1
        return sent

    def _flush_feeds(self, feeds: dict[str, dict[Any, FeedItem]], cuts: dict[str, int], followed: set[str]) -> int:
        sent = 0
        for feed, pending in feeds.items():
            items = []
            for item in pending.values():  # lazy items run even when unfollowed: they may drain a buffer
                try:
                    items.append(item() if callable(item) else item)
                except Exception:  # one bad producer must not stop the feed
                    log.exception("observer: %s feed item failed", feed)
            if feed not in followed and not self.shared:
                continue
            msg: dict[str, Any] = {"feed": feed, "items": items}
            if cuts.get(feed):
                msg["truncated"] = cuts[feed]
            self.socketio.emit("feed", msg, namespace=NAMESPACE, to=feed_room(feed))
            sent += 1
        return sent


def _count(counts: dict[str, int], key: str, delta: int) -> None:
    n = counts.get(key, 0) + delta
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


class LiveNamespace(Namespace):
    """``/live``: connect (authenticated), ``subscribe`` to a node, disconnect."""

    def __init__(self, hub: LiveHub, state: Any) -> None:
        super().__init__(NAMESPACE)
        self.hub = hub
        self.state = state
        self._rooms: dict[str, str] = {}
        self._sid_feeds: dict[str, set[str]] = {}
        self._login_of: dict[str, str] = {}
        """Socket id -> login session id (to close a revoked session's sockets)."""
        self._lock = threading.Lock()
        sessions = getattr(state, "sessions", None)
        if sessions is not None:
            sessions.on_revoke(self._revoked)

    def trigger_event(self, event: str, *args: Any) -> Any:
        """Dispatch to ``on_<event>``; an event we do not handle is refused and audited."""
        if event not in _EVENTS:
            self._refused_event(str(event)[:60], str(args[0]) if args else "")
            return None
        return super().trigger_event(event, *args)

    def _refused_event(self, event: str, sid: str) -> None:
        # outside any request context (no handler runs): who and where come from the connection's environ
        environ = self.server.get_environ(sid, namespace=self.namespace) if self.server is not None else None
        refusals = getattr(self.state, "refusals", None)
        if not environ or refusals is None:
            return
        sess = session_of(environ["flask.app"], environ) or {}
        refusals.note(
            "socket_event",
            "unknown_event",
            who=f"{sess.get('who') or 'anonymous'}/{sess.get('sid') or '-'}",
            addr=environ.get("REMOTE_ADDR"),
            target=event,
            message=f"no such event {event!r}",
            sync=False,
        )

    def on_connect(self, auth: Any = None) -> bool:
        policy = self.state.policy
        reason = check_origin(policy, request.host, request.headers.get("Origin"))
        if reason is not None:
            log.warning("observer: live connection refused (host/origin) from %s", request.remote_addr)
            self._refused(reason, f"{reason} not allowed")
            return False
        if not is_logged_in() or not self._alive():
            self._refused("login_required", "log in first")
            return False
        with self._lock:
            self._login_of[str(getattr(request, "sid", ""))] = str(session.get("sid"))
        return True

    def _revoked(self, logins: set[str]) -> None:
        """Session listener: close the live connections of revoked login sessions."""
        with self._lock:
            doomed = [s for s, login in self._login_of.items() if login in logins]
        for sock in doomed:
            try:
                self.disconnect(sock)
            except Exception:
                log.exception("observer: could not close a revoked session's live connection")

    def _alive(self) -> bool:
        sessions = getattr(self.state, "sessions", None)
        return sessions is None or bool(sessions.alive(str(session.get("sid"))))

    def _refused(self, reason: str, message: str) -> None:
        refusals = getattr(self.state, "refusals", None)
        if refusals is not None:
            refusals.note("socket_connect", reason, who=who(), addr=request.remote_addr, message=message, sync=False)

    def on_subscribe(self, data: Any) -> dict[str, Any]:
        sid = str(getattr(request, "sid", ""))
        if isinstance(data, dict) and "feed" in data:
            return self._subscribe_feed(sid, data.get("feed"))
        node = data.get("node") if isinstance(data, dict) else None
        view = data.get("view") if isinstance(data, dict) else None
        if not isinstance(node, str) or self.state.model(node) is None:
            ack = {"ok": False, "error": "unknown_node", "node": node}
            self.emit("ack", ack, room=sid)
            return ack
        if view is not None and view not in VIEWS:
            ack = {"ok": False, "error": "bad_view", "node": node}
            self.emit("ack", ack, room=sid)
            return ack
        with self._lock:
            prev = self._rooms.get(sid)
            self._rooms[sid] = node
        if prev != node:
            if prev is not None:
                leave_room(room_of(prev))
                self.hub.subscribed(prev, -1)
            join_room(room_of(node))
            self.hub.subscribed(node, +1)
        model = self.state.model(node)
        ack = {"ok": True, "node": node, "view": view, "room": room_of(node), "status": model.status}
        self.emit("ack", ack, room=sid)
        return ack

    def _subscribe_feed(self, sid: str, feed: Any) -> dict[str, Any]:
        if not isinstance(feed, str) or feed not in FEEDS:
            ack = {"ok": False, "error": "unknown_feed", "feed": feed}
            self.emit("ack", ack, room=sid)
            return ack
        if feed in FEED_GRANTS and not FEED_GRANTS[feed] & set(session.get("actions") or ()):
            ack = {"ok": False, "error": "not_permitted", "feed": feed}
            self.emit("ack", ack, room=sid)
            return ack
        with self._lock:
            mine = self._sid_feeds.setdefault(sid, set())
            new = feed not in mine
            mine.add(feed)
        if new:
            join_room(feed_room(feed))
            self.hub.subscribed_feed(feed, +1)
        ack = {"ok": True, "feed": feed, "room": feed_room(feed)}
        self.emit("ack", ack, room=sid)
        return ack

    def on_disconnect(self, *args: Any) -> None:
        sid = str(getattr(request, "sid", ""))
        with self._lock:
            node = self._rooms.pop(sid, None)
            feeds = self._sid_feeds.pop(sid, set())
            self._login_of.pop(sid, None)
        if node is not None:
            self.hub.subscribed(node, -1)
        for feed in feeds:
            self.hub.subscribed_feed(feed, -1)

"""Message traces: started on an agent, followed live, kept (bounded), exported.

A trace is a trace session on one node's agent (``agent/_trace.py``): the
processes, a direction and redbug's limits (a message count, a rate, a
duration). :class:`TraceService` starts and stops them for the web routes
(:mod:`observer.views.trace`), writing an audit row before each start and stop
and one when a trace ends by itself. The agent's ``{"t": "trace"}`` frames
reach :meth:`TraceService.on_frames` through the attachment's frame tap: the
arrows are kept in memory for the running trace, written to the history
database, and pushed to the browsers on the ``trace`` feed
(:mod:`observer.live`) -- never polled.

Storage
    :mod:`observer.db.traces` (migration 4): ``traces`` (one row per trace,
    its spec, counts and end) and ``trace_messages`` (its arrows), written
    behind by the database's writer thread. Bounded: the newest
    :data:`KEEP_TRACES` traces are kept, each with at most ``max_stored``
    arrows (the count says how many there were).

Export
    :func:`as_text` writes the lines an Erlang user knows from dbg and redbug::

        % 12:00:01.123 <0.42.0>(payments) << {call,#3,{charge,1}} from <0.50.0>

Threading rules
    :meth:`TraceService.on_frames` and :meth:`TraceService.on_change` run on
    the attach loop thread and only append under a short lock (the store and
    the hub queue); :meth:`start` and :meth:`stop` block on the agent and run
    on request threads.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.client import AgentError

from .db import traces as trace_db

if TYPE_CHECKING:
    from .attach import AttachManager
    from .store import HistoryStore

__all__ = ["KEEP_TRACES", "MAX_STORED", "TraceService", "as_text", "install", "load", "stored"]

log = logging.getLogger("observer.trace")

KEEP_TRACES = 50
"""Traces kept in the history database (older ones are deleted at each start)."""
MAX_STORED = 5000
"""Arrows kept per trace (live and stored)."""

Publish = Callable[[str, dict[str, Any]], None]


@dataclass
class LiveTrace:
    """A trace this observer started (running or ended while it watched)."""

    id: str
    node: str
    spec: dict[str, Any]
    who: str
    started: float
    msgs: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    dropped: int = 0
    ended: float | None = None
    end: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "who": self.who,
            "started": self.started,
            "ended": self.ended,
            "end": self.end,
            "count": self.count,
            "dropped": self.dropped,
            "stored": len(self.msgs),
            "spec": self.spec,
            "running": self.end is None,
        }


class TraceService:
    """Starts, stops and follows traces (see the module docstring).

    ``command(node, cmd, timeout=, **args)`` runs an agent command (blocking);
    ``store`` is the history store (audit rows; its ``db`` holds the traces);
    ``publish(feed, item)`` pushes to the browsers."""

    def __init__(
        self,
        command: Callable[..., Any],
        store: HistoryStore,
        publish: Publish,
        *,
        keep: int = KEEP_TRACES,
        max_stored: int = MAX_STORED,
    ) -> None:
        self._command = command
        self.store = store
        self._publish = publish
        self.keep = keep
        self.max_stored = max_stored
        self._lock = threading.Lock()
        self._traces: dict[str, LiveTrace] = {}
        self._running_nodes: dict[str, int] = {}

    # -- request threads ---------------------------------------------------------------------------

    def start(
        self,
        node: str,
        pids: list[str],
        *,
        who: str,
        from_addr: str | None,
        direction: str = "both",
        max_msgs: int = 100,
        max_rate: int = 100,
        duration: float = 60.0,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Start a trace on ``node``'s agent; returns its summary. Raises what
        ``command`` raises (``AgentError``) after auditing the failure, and what
        ``audit`` raises (the trace is then not started)."""
        tid = secrets.token_hex(6)
        args = {"pids": pids, "dir": direction, "max_msgs": max_msgs, "max_rate": max_rate, "duration": duration}
        store = self.store
        audit_id = store.audit(who, from_addr, "trace_start", ",".join(pids)[:200], {"trace": tid, **args}, node=node)
        with self._lock:  # frames may come before the reply: be ready for them
            tr = self._traces[tid] = LiveTrace(tid, node, {**args}, who, time.time())
            self._running_nodes[node] = self._running_nodes.get(node, 0) + 1
        try:
            got = self._command(node, "trace", timeout=timeout, id=tid, on=True, **args)
        except Exception as exc:
            with self._lock:
                self._traces.pop(tid, None)
                self._dec(node)
            store.audit_result(audit_id, {"error": str(exc)[:300]}, ok=False)
            raise
        with self._lock:
            tr.spec = {**args, "pids": got.get("pids", pids), "names": got.get("names", {})}
            tr.started = float(got.get("started") or tr.started)
            summary = tr.summary()
        trace_db.begin(store.db, tid, node, tr.started, who, tr.spec)
        trace_db.prune(store.db, self.keep)
        store.audit_result(audit_id, {"trace": tid, "pids": tr.spec["pids"]})
        self._publish("trace", {"trace": tid, "node": node, "start": summary})
        self._trim()
        return summary

    def stop(self, tid: str, *, who: str, from_addr: str | None, timeout: float = 10.0) -> dict[str, Any]:
        """Stop a running trace (audited). Raises KeyError if unknown or ended."""
        with self._lock:
            tr = self._traces.get(tid)
            if tr is None or tr.end is not None:
                raise KeyError(tid)
        store = self.store
        audit_id = store.audit(who, from_addr, "trace_stop", tid, {"trace": tid}, node=tr.node)
        try:
            got = self._command(tr.node, "trace", timeout=timeout, id=tid, on=False)
        except Exception as exc:
            # the agent no longer runs it (a reconnect ended it): end it here
            self._ended(tr, "stopped", None, None)
            store.audit_result(audit_id, {"error": str(exc)[:300]}, ok=False)
            return tr.summary()
        self._ended(tr, "stopped", got.get("count"), got.get("dropped"))
        store.audit_result(audit_id, {"end": "stopped", "count": tr.count, "dropped": tr.dropped})
        return tr.summary()

    def get(self, tid: str) -> LiveTrace | None:
        with self._lock:
            return self._traces.get(tid)

    def live(self, node: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [t.summary() for t in self._traces.values() if node is None or t.node == node]

    def snapshot(self, tid: str) -> dict[str, Any] | None:
        """A trace this observer holds in memory: summary and arrows."""
        with self._lock:
            tr = self._traces.get(tid)
            if tr is None:
                return None
            return {"trace": tr.summary(), "msgs": list(tr.msgs)}

    # -- attach loop thread ------------------------------------------------------------------------

    def on_frames(self, node: str, batch: list[dict[str, Any]]) -> None:
        """The attachment's frame tap: take the ``trace`` frames of a batch."""
        if node not in self._running_nodes:
            return
        for m in batch:
            if m.get("t") != "trace":
                continue
            try:
                self._frame(node, m)
            except Exception:  # one odd frame must not stop the attachment
                log.exception("observer: bad trace frame from %s", node)

    def _frame(self, node: str, m: dict[str, Any]) -> None:
        tid = str(m.get("trace"))
        msgs = [x for x in (m.get("msgs") or []) if isinstance(x, dict)]
        with self._lock:
            tr = self._traces.get(tid)
            if tr is None or tr.node != node or tr.end is not None:
                return
            room = max(0, self.max_stored - len(tr.msgs))
            keep = msgs[:room]
            tr.msgs.extend(keep)
            tr.count = int(m.get("count") or tr.count)
            tr.dropped = int(m.get("dropped") or 0)
        if keep:
            trace_db.add_messages(self.store.db, tid, keep)
        self._publish("trace", {"trace": tid, "node": node, "msgs": msgs, "count": tr.count, "dropped": tr.dropped})
        if "end" in m:
            self._ended(tr, str(m["end"]), tr.count, tr.dropped)

    def on_change(self, node: str, changes: list[Any]) -> None:
        """AttachManager listener: a node going down ends its traces (``detached``)."""
        if node not in self._running_nodes:
            return
        for c in changes:
            down = (getattr(c, "data", None) or {}).get("status") == "down"
            if down and getattr(c, "kind", None) == "status" and getattr(c, "pid", 1) is None:
                with self._lock:
                    running = [t for t in self._traces.values() if t.node == node and t.end is None]
                for tr in running:
                    self._ended(tr, "detached", None, None)

    # -- ending ------------------------------------------------------------------------------------

    def _ended(self, tr: LiveTrace, reason: str, count: Any, dropped: Any) -> None:
        with self._lock:
            if tr.end is not None:
                return
            tr.end = reason
            tr.ended = time.time()
            if isinstance(count, int):
                tr.count = count
            if isinstance(dropped, int):
                tr.dropped = dropped
            self._dec(tr.node)
            summary = tr.summary()
        trace_db.end(
            self.store.db, tr.id, count=tr.count, dropped=tr.dropped, stored=len(tr.msgs), ended=tr.ended, reason=reason
        )
        self._publish("trace", {"trace": tr.id, "node": tr.node, "end": reason, "summary": summary})
        if reason != "stopped":
            # a stop is audited by stop(); a trace that ended by itself is audited
            # here, off the attach loop (an audit row waits for its commit)
            threading.Thread(
                target=self._audit_end, args=(tr, reason), name="observer-trace-audit", daemon=True
            ).start()

    def _audit_end(self, tr: LiveTrace, reason: str) -> None:
        try:
            aid = self.store.audit(tr.who, None, "trace_end", tr.id, {"trace": tr.id, "reason": reason}, node=tr.node)
            self.store.audit_result(aid, {"end": reason, "count": tr.count, "dropped": tr.dropped})
        except Exception:
            log.exception("observer: could not audit the end of trace %s", tr.id)

    def _dec(self, node: str) -> None:
        n = self._running_nodes.get(node, 0) - 1
        if n > 0:
            self._running_nodes[node] = n
        else:
            self._running_nodes.pop(node, None)

    def _trim(self) -> None:
        """Forget ended traces beyond ``keep`` (the database keeps them)."""
        with self._lock:
            ended = [t for t in self._traces.values() if t.end is not None]
            for t in ended[: max(0, len(ended) - self.keep)]:
                del self._traces[t.id]


def install(manager: AttachManager, store: HistoryStore, publish: Publish) -> TraceService:
    """A trace service fed by every attachment of ``manager`` (present and future)."""

    def command(node: str, cmd: str, *, timeout: float = 10.0, **args: Any) -> Any:
        att = manager.get(node)
        if att is None:
            raise AgentError("not_connected", f"no node {node!r}")
        return att.command(cmd, timeout=timeout, **args)

    svc = TraceService(command, store, publish)
    manager.frame_tap = svc.on_frames
    for att in manager.list():
        if hasattr(att, "frame_tap"):
            att.frame_tap = svc.on_frames
    manager.on_change(svc.on_change)
    return svc


def stored(store: HistoryStore, node: str | None = None) -> list[dict[str, Any]]:
    """Stored traces, newest first."""
    return trace_db.list_traces(store.db, node=node, limit=KEEP_TRACES)


def load(store: HistoryStore, tid: str) -> dict[str, Any] | None:
    """A stored trace and its arrows, or None."""
    return trace_db.get(store.db, tid)


# -- export ------------------------------------------------------------------------------------


def _term(v: Any) -> str:
    """A redacted payload in Erlang's term syntax (tuples in braces, lists in brackets)."""
    if isinstance(v, dict):
        if v.get("__type__") == "tuple" and isinstance(v.get("items"), list):
            return "{" + ",".join(_term(x) for x in v["items"]) + "}"
        if "__type__" in v and len(v) <= 3:
            return (
                "#"
                + str(v.get("__type__"))
                + "<"
                + ",".join(f"{k}={_term(x)}" for k, x in v.items() if k != "__type__")
                + ">"
            )
        return "#{" + ",".join(f"{_term(k)} => {_term(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_term(x) for x in v) + "]"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False) if not v.isidentifier() or v[:1].isupper() else v
    if v is None:
        return "undefined"
    if v is True or v is False:
        return str(v).lower()
    return str(v)


def _who(pid: str | None, names: dict[str, str]) -> str:
    if pid is None:
        return "outside"
    name = names.get(pid)
    return f"{pid}({name})" if name and name != pid else pid


def as_text(trace: dict[str, Any], msgs: list[dict[str, Any]]) -> str:
    """dbg/redbug-like lines, one per arrow: ``<<`` received by, ``>>`` sent to."""
    names: dict[str, str] = dict((trace.get("spec") or {}).get("names") or {})
    lines = [
        f"% trace {trace.get('id')} on {trace.get('node')}: {len(msgs)} of {trace.get('count')} messages, "
        f"{trace.get('dropped')} dropped, ended: {trace.get('end') or 'running'}"
    ]
    traced = set(names)
    for m in msgs:
        when = (
            time.strftime("%H:%M:%S", time.localtime(float(m.get("time") or 0)))
            + (f"{float(m.get('time') or 0) % 1:.3f}"[1:])
        )
        kind = m.get("kind")
        frm, to = m.get("from"), m.get("to")
        body = _term(m.get("msg"))
        if kind == "call":
            body = f"{{'$gen_call',#{m.get('call')},{body}}}"
        elif kind in ("reply", "error"):
            lat = m.get("latency_ms")
            body = f"{{'$gen_reply',#{m.get('call')},{body}}}" + (f" ({lat} ms)" if lat is not None else "")
            if kind == "error":
                body += " [call failed]"
        elif kind == "cast":
            body = f"{{'$gen_cast',{body}}}"
        if m.get("masked"):
            body += f" [{m.get('masked')} masked]"
        if to in traced or (frm not in traced and to is not None):
            lines.append(f"% {when} {_who(to, names)} << {body} from {_who(frm, names)}")
        else:
            lines.append(f"% {when} {_who(frm, names)} >> {body} to {_who(to, names)}")
    if trace.get("dropped"):
        lines.append(f"% ... {trace.get('dropped')} messages dropped (limits cut in)")
    return "\n".join(lines) + "\n"

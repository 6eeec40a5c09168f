"""Trace sessions: who sent what to whom, within limits in the manner of redbug.

A trace is started by an observer's ``trace`` command with an ``id``
(:meth:`Tracer.start`): the processes, the direction (``in``, ``out`` or
``both``) and three limits -- a message count, a rate (messages per second)
and a duration. It stops itself at the first limit reached, when its
observer's session closes, when every traced process has died, or on the
``trace`` command with ``on: false``. The processes' ``traced`` flag is set on
the host; the runtime then emits ``message_sent`` / ``message_received`` and,
for gen_server calls, ``call_sent`` / ``call_returned`` (a traced caller) and
``call_replied`` (a traced server).

The agent's thread folds those events into **arrows** (:meth:`Tracer.feed`):
one per message, a call and its reply paired (``call`` number, ``latency_ms``)
however many of the two ends are traced. A message seen at both ends (a
traced sender and a traced receiver) is one arrow. Payloads are redacted by
the agent's trace redactor. Arrows go to the observer that started the trace
only, in frames::

    {"t": "trace", "trace": ID, "msgs": [ARROW, ...], "count": N, "dropped": D}
    {"t": "trace", "trace": ID, "msgs": [...], "count": N, "dropped": D, "end": REASON}

    ARROW = {"n", "time", "kind": "send"|"call"|"reply"|"error"|"cast",
             "from": PID|None (outside), "to": PID|NAME|None, "msg", "masked",
             "truncated", "call": N|None, "latency_ms": MS|None}

``REASON`` is ``msgs``, ``rate``, ``duration``, ``exited``, ``detached``,
``stopped`` or ``agent_stopped``. ``dropped`` counts arrows cut by the rate
limit and events the collector's per-process rate cap dropped meanwhile.

Threading rules
    Everything here runs on the agent's thread, but the flag flips, which go
    to the host loop (``call_soon_threadsafe``). Events hold references to the
    messages themselves; pairing keeps the objects (never bare ``id()``s), in
    maps bounded by :data:`MAX_PENDING`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import actors

from . import protocol as P

if TYPE_CHECKING:
    from ._agent import Agent
    from ._session import Session

audit = logging.getLogger("agent.audit")

__all__ = ["TRACE_EVENTS", "Trace", "TraceError", "Tracer"]

MAX_TRACES = 8
"""Traces running at once on one agent."""
MAX_PIDS = 100
MAX_PENDING = 10_000
"""Calls and messages waiting for their other end, per trace."""
DIRECTIONS = ("in", "out", "both")
TRACE_EVENTS = frozenset(
    {actors.MessageSent, actors.MessageReceived, actors.CallSent, actors.CallReturned, actors.CallReplied}
)
_CALL_EVENTS = frozenset({actors.CallSent, actors.CallReturned, actors.CallReplied})


class TraceError(Exception):
    """A trace command's bad arguments (``code`` is a protocol error code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Trace:
    """One running trace and its pairing state (agent thread)."""

    def __init__(
        self,
        tid: str,
        owner: Session,
        pids: dict[actors.Pid, str],
        direction: str,
        max_msgs: int,
        max_rate: int,
        duration: float,
    ) -> None:
        self.id = tid
        self.owner = owner
        self.pids = pids
        """Traced pid -> its name or label (or the pid)."""
        self.keys = {str(p) for p in pids}
        self.alive = set(pids)
        self.direction = direction
        self.max_msgs = max_msgs
        self.max_rate = max_rate
        self.duration = duration
        self.started = time.time()
        self.count = 0
        self.dropped = 0
        self.ended: str | None = None
        self.out: list[dict[str, Any]] = []
        self.timer: asyncio.TimerHandle | None = None
        self._win_start = 0.0
        self._win_n = 0
        self._calls = 0
        self._by_request: dict[int, deque[tuple[Any, int, str, float]]] = {}
        self._by_from: dict[int, tuple[Any, int, str | None, float]] = {}
        self._open: dict[str, list[Any]] = {}
        """caller -> [call number, start, replied by a traced server]."""
        self._sent: dict[int, deque[Any]] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "trace": self.id,
            "pids": sorted(self.keys),
            "names": {str(p): n for p, n in self.pids.items()},
            "dir": self.direction,
            "max_msgs": self.max_msgs,
            "max_rate": self.max_rate,
            "duration": self.duration,
            "started": self.started,
        }


class Tracer:
    """The agent's traces (see the module docstring)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.traces: dict[str, Trace] = {}
        self.by_pid: dict[actors.Pid, list[Trace]] = {}
        self._collector_dropped = 0

    # -- commands (agent thread, in a command handler) --------------------------------------------

    async def command(self, on_host: Any, session: Session, args: dict[str, Any]) -> dict[str, Any]:
        tid = args.get("id")
        if not isinstance(tid, str) or not tid or len(tid) > 64:
            raise TraceError(P.E_BAD_ARGS, "'id' must be a string of 1-64 characters")
        on = args.get("on", True)
        if on is False:
            tr = self.traces.get(tid)
            if tr is None or tr.owner is not session:
                raise TraceError(P.E_BAD_ARGS, f"no running trace {tid!r} of this session")
            self.end(tr, "stopped")
            return {"trace": tid, "end": "stopped", "count": tr.count, "dropped": tr.dropped}
        if on is not True:
            raise TraceError(P.E_BAD_ARGS, "'on' must be a boolean")
        return await self._start(on_host, session, tid, args)

    async def _start(self, on_host: Any, session: Session, tid: str, args: dict[str, Any]) -> dict[str, Any]:
        if tid in self.traces:
            raise TraceError(P.E_BAD_ARGS, f"trace {tid!r} is already running")
        if len(self.traces) >= MAX_TRACES:
            raise TraceError(P.E_BUSY, f"at most {MAX_TRACES} traces at once")
        raw = args.get("pids")
        if not isinstance(raw, list) or not raw or len(raw) > MAX_PIDS or not all(isinstance(p, str) for p in raw):
            raise TraceError(P.E_BAD_ARGS, f"'pids' must be a list of 1-{MAX_PIDS} pids or names")
        direction = args.get("dir", "both")
        if direction not in DIRECTIONS:
            raise TraceError(P.E_BAD_ARGS, "'dir' must be in, out or both")
        max_msgs = _num(args, "max_msgs", 100, 1, 100_000)
        max_rate = _num(args, "max_rate", 100, 1, 10_000)
        duration = float(_num(args, "duration", 60, 0.05, 3600, real=True))
        node = self.agent.node
        pids: dict[actors.Pid, str] = {}
        for key in raw:  # resolved here (find_process is safe from any thread) ...
            try:
                target: actors.Pid | str = actors.Pid.parse(key) if key.startswith("<") else key
            except ValueError:
                continue
            p = actors.find_process(node, target)
            if p is not None and p.alive:
                pids[p.pid] = p.name or p.label or str(p.pid)
        if not pids:
            raise TraceError(P.E_NO_SUCH_PROCESS, "none of the processes is alive")
        # ... and registered before the flags go on: no event of theirs comes unclaimed
        tr = Trace(tid, session, pids, direction, int(max_msgs), int(max_rate), duration)
        self.traces[tid] = tr
        for pid in pids:
            self.by_pid.setdefault(pid, []).append(tr)

        def on() -> set[actors.Pid]:
            alive = set()
            for pid in pids:
                if actors.find_process(node, pid) is not None:
                    node.trace(pid, True)
                    alive.add(pid)
            return alive

        try:
            tr.alive = await on_host(on)
        except BaseException:
            self.end(tr, "failed", send=False)
            raise
        if not tr.alive:
            self.end(tr, "exited", send=False)
            raise TraceError(P.E_NO_SUCH_PROCESS, "none of the processes is alive")
        tr.timer = asyncio.get_running_loop().call_later(duration, self._expire, tid)
        self._collector_dropped = self.agent.collector.trace_dropped
        audit.info("agent: trace %s started on %s by %s (%s)", tid, ",".join(sorted(tr.keys)), session.peer, session.id)
        return tr.describe()

    def _expire(self, tid: str) -> None:
        tr = self.traces.get(tid)
        if tr is not None:
            self.end(tr, "duration")
            self.agent._flush_sessions()

    # -- ending -------------------------------------------------------------------------------------

    def end(self, tr: Trace, reason: str, *, send: bool = True) -> None:
        """Stop ``tr``: unflag its processes (unless traced otherwise), send the
        end frame (``send``: not for a trace whose start failed)."""
        if tr.ended is not None:
            return
        tr.ended = reason
        self.traces.pop(tr.id, None)
        if tr.timer is not None:
            tr.timer.cancel()
        off = []
        for pid in tr.pids:
            lst = self.by_pid.get(pid)
            if lst is not None:
                lst[:] = [t for t in lst if t is not tr]
                if not lst:
                    del self.by_pid[pid]
                    if not any(str(pid) in s.traced for s in self.agent.sessions):
                        off.append(pid)
        if off:
            self._untrace(off)
        if not send:
            return
        self._send(tr, end=reason)
        audit.info(
            "agent: trace %s ended (%s): %d messages, %d dropped, for %s (%s)",
            tr.id,
            reason,
            tr.count,
            tr.dropped,
            tr.owner.peer,
            tr.owner.id,
        )

    def _untrace(self, pids: list[actors.Pid]) -> None:
        node = self.agent.node
        collector = self.agent.collector

        def off() -> None:
            for pid in pids:
                if pid in self.by_pid:  # traced again meanwhile
                    continue
                p = actors.find_process(node, pid)
                if p is not None:
                    node.trace(pid, False)
                collector.forget_trace(pid)

        try:
            node.loop.call_soon_threadsafe(off)
        except RuntimeError:  # the host loop is closed
            pass

    def session_closed(self, session: Session) -> None:
        for tr in [t for t in self.traces.values() if t.owner is session]:
            self.end(tr, "detached")

    def stop_all(self) -> None:
        for tr in list(self.traces.values()):
            self.end(tr, "agent_stopped")

    def exited(self, pid: actors.Pid) -> None:
        for tr in list(self.by_pid.get(pid, ())):
            tr.alive.discard(pid)
            if not tr.alive:
                self.end(tr, "exited")

    # -- events (agent thread, from the drain) -------------------------------------------------------

    def feed(self, ev: Any) -> bool:
        """Fold one trace event into the traces it concerns. True if the event is
        for traces only (no legacy ``trace`` event should be published for it)."""
        t = type(ev)
        pid = ev.sender if t is actors.MessageSent else ev.pid
        for tr in list(self.by_pid.get(pid, ())):
            try:
                self._fold(tr, t, ev, str(pid))
            except Exception:  # an odd message must not stop the drain
                logging.getLogger("agent").exception("agent: trace %s could not fold %s", tr.id, t.__name__)
        return t in _CALL_EVENTS or not any(str(pid) in s.traced for s in self.agent.sessions)

    def _fold(self, tr: Trace, t: type, ev: Any, me: str) -> None:
        if t is actors.MessageReceived:
            msg = ev.message
            mt = type(msg)
            if mt is actors.CallMsg:
                q = tr._by_request.get(id(msg.request))
                hit = None
                if q:
                    for i, e in enumerate(q):
                        if e[0] is msg.request:
                            hit = e
                            del q[i]
                            break
                    if not q:
                        del tr._by_request[id(msg.request)]
                if hit is not None:  # the traced caller drew the arrow already
                    _put(tr._by_from, id(msg.reply_to), (msg.reply_to, hit[1], hit[2], hit[3]))
                    return
                tr._calls += 1
                _put(tr._by_from, id(msg.reply_to), (msg.reply_to, tr._calls, None, ev.time))
                self._arrow(tr, "call", None, me, msg.request, ev.time, call=tr._calls)
            else:
                cast = mt is actors.CastMsg
                body = msg.request if cast else msg
                if self._seen_sent(tr, body):
                    return  # the traced sender drew it
                self._arrow(tr, "cast" if cast else "send", None, me, body, ev.time)
        elif t is actors.MessageSent:
            to = self._resolve(ev.to)
            msg = ev.message
            cast = type(msg) is actors.CastMsg
            body = msg.request if cast else msg
            if to in tr.keys:
                _append(tr._sent, id(body), body)
            self._arrow(tr, "cast" if cast else "send", me, to, body, ev.time, to_name=_name(ev.to))
        elif t is actors.CallSent:
            tr._calls += 1
            _append(tr._by_request, id(ev.request), (ev.request, tr._calls, me, ev.time))
            _put(tr._open, me, [tr._calls, ev.time, False])
            to = self._resolve(ev.to)
            self._arrow(tr, "call", me, to, ev.request, ev.time, call=tr._calls, to_name=_name(ev.to))
        elif t is actors.CallReplied:
            pending = tr._by_from.pop(id(ev.reply_to), None)
            if pending is None or pending[0] is not ev.reply_to:
                self._arrow(tr, "reply", me, None, ev.value, ev.time)
                return
            _, n, caller, t0 = pending
            if caller is not None:
                o = tr._open.get(caller)
                if o is not None and o[0] == n:
                    o[2] = True
            self._arrow(tr, "reply", me, caller, ev.value, ev.time, call=n, latency=ev.time - t0)
        elif t is actors.CallReturned:
            o = tr._open.pop(me, None)
            if o is not None and o[2]:
                return  # the traced server drew the reply
            frm = self._resolve(ev.to)
            value = ev.value if ev.ok else f"{type(ev.value).__name__}: {ev.value}"
            self._arrow(
                tr,
                "reply" if ev.ok else "error",
                frm,
                me,
                value,
                ev.time,
                call=o[0] if o else None,
                latency=(ev.time - o[1]) if o else None,
            )

    @staticmethod
    def _seen_sent(tr: Trace, body: Any) -> bool:
        """Whether a traced sender already drew the arrow of this message (and forget it)."""
        q = tr._sent.get(id(body))
        if q:
            for i, obj in enumerate(q):
                if obj is body:
                    del q[i]
                    if not q:
                        del tr._sent[id(body)]
                    return True
        return False

    def _resolve(self, to: Any) -> str:
        if isinstance(to, str):
            pid = self.agent.node.whereis(to)
            return str(pid) if pid is not None else to
        return str(to)

    def _arrow(
        self,
        tr: Trace,
        kind: str,
        frm: str | None,
        to: str | None,
        payload: Any,
        when: float,
        *,
        call: int | None = None,
        latency: float | None = None,
        to_name: str | None = None,
    ) -> None:
        if tr.ended is not None:
            return
        d = tr.direction
        if (d == "in" and to not in tr.keys) or (d == "out" and frm not in tr.keys):
            return
        now = time.monotonic()
        if now - tr._win_start >= 1.0:
            tr._win_start, tr._win_n = now, 0
        if tr._win_n >= tr.max_rate:
            tr.dropped += 1
            self.end(tr, "rate")
            return
        tr._win_n += 1
        tr.count += 1
        enc = self.agent.trace_redactor.encode(payload)
        arrow = {
            "n": tr.count,
            "time": when,
            "kind": kind,
            "from": frm,
            "to": to,
            "msg": enc.data,
            "masked": enc.masked,
            "truncated": enc.truncated,
            "call": call,
            "latency_ms": None if latency is None else round(latency * 1000.0, 3),
        }
        if to_name is not None and to_name != to:
            arrow["to_name"] = to_name
        tr.out.append(arrow)
        if tr.count >= tr.max_msgs:
            self.end(tr, "msgs")

    # -- frames ---------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Send what each trace gathered (end of a drain)."""
        lost = self.agent.collector.trace_dropped - self._collector_dropped
        if lost > 0:
            self._collector_dropped += lost
            for tr in self.traces.values():
                tr.dropped += lost
        for tr in list(self.traces.values()):
            if tr.out or lost > 0:
                self._send(tr)

    def _send(self, tr: Trace, end: str | None = None) -> None:
        frame: dict[str, Any] = {"t": "trace", "trace": tr.id, "msgs": tr.out, "count": tr.count, "dropped": tr.dropped}
        if end is not None:
            frame["end"] = end
        tr.out = []
        tr.owner.push_event(frame)


def _name(to: Any) -> str | None:
    """The registered name a message was sent to (None for a pid)."""
    return to[:200] if isinstance(to, str) else None


def _put(d: dict[Any, Any], key: Any, value: Any) -> None:
    """``d[key] = value``; the oldest key goes past :data:`MAX_PENDING`."""
    d[key] = value
    if len(d) > MAX_PENDING:
        del d[next(iter(d))]


def _append(d: dict[Any, deque[Any]], key: Any, item: Any) -> None:
    """Append ``item`` to the deque at ``key``; the oldest key goes past :data:`MAX_PENDING`."""
    q = d.get(key)
    if q is None:
        q = d[key] = deque()
    q.append(item)
    if len(d) > MAX_PENDING:
        del d[next(iter(d))]


def _num(args: dict[str, Any], key: str, default: float, lo: float, hi: float, *, real: bool = False) -> float:
    v = args.get(key, default)
    ok = isinstance(v, int | float) if real else isinstance(v, int)
    if isinstance(v, bool) or not ok or not lo <= v <= hi:
        raise TraceError(P.E_BAD_ARGS, f"'{key}' must be {'a number' if real else 'an integer'} in [{lo}, {hi}]")
    return v

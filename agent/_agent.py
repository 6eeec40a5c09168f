"""The agent: a thread with its own event loop serving observers.

While an observer is attached, the host (the actor system's loop) runs the
:class:`Collector`'s deque appends, one hand-off per batch of events, in
which it encodes and writes the batch itself when the agent's thread is
parked (agent/_host_drain.py; otherwise it waits for the agent's thread to
do it), a tick callback ten times a second that does the periodic work the
same way and pushes the watchdog's deadline back, and the commands
observers send (bounded by timeouts). With nobody attached to an actors
node the host runs only the tick, which notes its time (agent/_watch.py).
Everything else -- snapshots, handshakes, the watchdog, blocked-loop
reports -- runs on the agent's thread (docs/protocol.md §11.1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
import ssl
import sys
import threading
from collections import deque
from typing import Any, cast

import actors

from . import _host_drain
from . import protocol as P
from ._aio_source import AsyncioSource
from ._alarm import Alarm
from ._clock import Clock
from ._collector import Collector
from ._commands import Commands
from ._crash import CrashLog
from ._drain import WRITE_HIGH_WATER, Drains
from ._dump import Dumper
from ._encode import record_and_meta
from ._preauth import PreAuth
from ._redact import Redactor
from ._sampling import Sampling
from ._scrub import RedactionPolicy
from ._session import Session
from ._source import ActorsSource, Source
from ._trace import Tracer
from ._watch import Watch

log = logging.getLogger("agent")
AGENT_VERSION = "0.1.0"


class Agent(Drains, Sampling, Clock, Watch):
    """Serves one source -- an :class:`actors.Node` or an asyncio event loop
    (see :mod:`agent._source`) -- to observers. Create with :func:`agent.start`."""

    def __init__(
        self,
        target: actors.Node | asyncio.AbstractEventLoop | Source,
        *,
        host: str = "127.0.0.1",
        port: int = 4711,
        token: bytes,
        read_token: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
        sample_hz: float = 4.0,
        event_limit: int = 10_000,
        event_bytes_limit: int = 3 << 20,
        collector_limit: int = 100_000,
        max_frame: int = P.MAX_INBOUND_FRAME,
        max_inflight: int = 16,
        max_sessions: int = 32,
        command_timeout: float = 5.0,
        block_threshold: float = 0.1,
        heartbeat: float = 0.1,
        redaction: RedactionPolicy | None = None,
        trace_rate: float = 200.0,
        handoff_timeout: float = 0.004,
        host_drain: bool = True,
        dump_dir: str | None = None,
        dump_gzip: bool = False,
    ) -> None:
        if not token:
            raise ValueError("an operator token is required")
        if read_token is not None and read_token == token:
            raise ValueError("the read-only token must differ from the operator token")
        if isinstance(target, asyncio.AbstractEventLoop):
            target = AsyncioSource(target)
        elif not isinstance(target, Source):
            target = ActorsSource(target)
        self.source: Source = target
        """What this agent observes (agent/_source.py)."""
        if isinstance(target, ActorsSource):
            self.node = target.node
        self.host = host
        self.port = port
        self.token = token.decode(errors="replace")
        """The operator token (to hand to the observer; never sent by the agent)."""
        self._tokens = {P.ROLE_OPERATOR: token}
        if read_token:
            self._tokens[P.ROLE_READ] = read_token
        self.ssl_context = ssl_context
        self.sample_hz = sample_hz
        self.event_limit = event_limit
        self.event_bytes_limit = event_bytes_limit
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self.max_sessions = max_sessions
        self.command_timeout = command_timeout
        self.block_threshold = block_threshold
        self.heartbeat = heartbeat
        self.policy = redaction or RedactionPolicy()
        self.redactor = Redactor(self.policy)
        self.trace_redactor = Redactor(
            dataclasses.replace(self.policy, max_bytes=4096, max_string=500, time_budget_s=0.005)
        )
        self.commands = Commands(self)
        self.tracer = Tracer(self)
        """Trace sessions with limits (agent/_trace.py)."""
        self.crash_log = CrashLog(self.policy)
        """Encodes crash reports and keeps the latest (agent/_crash.py)."""
        self.dump_dir = dump_dir if dump_dir is not None else (os.environ.get("OBSERVER_AGENT_DUMP_DIR") or None)
        self.dump_gzip = dump_gzip or os.environ.get("OBSERVER_AGENT_DUMP_GZIP", "") in ("1", "true", "yes")
        self.dumper: Any = None
        """The post-mortem dump writer when ``dump_dir`` is set (agent/_dump.py)."""
        self.sessions: list[Session] = []
        self.seq = 0
        self.auth_failures = 0
        self.events_dropped = 0
        self.restarts = 0
        self.crashes = 0
        self.messages_total = 0
        """Messages delivered, summed over samples (observers derive rates from it)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self.preauth = PreAuth()
        """Pending handshakes' limits and the agent id the handshake binds (:mod:`agent._preauth`)."""
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.collector = Collector(
            self._wake,
            limit=collector_limit,
            trace_rate=trace_rate,
            host_loop=target.loop,
            handoff_timeout=handoff_timeout,
        )
        self.work_lock = threading.Lock()
        """Held by the agent's thread except while its loop waits in ``select``
        (agent/_host_drain.py): the host drains a batch itself when it gets it."""
        self.write_high_water = WRITE_HIGH_WATER
        self._host_tick_work = functools.partial(_host_drain.host_tick, self) if host_drain else None
        if host_drain:
            self.collector.host_work = functools.partial(_host_drain.host_drain, self)
        self._cache: dict[int, list[Any]] = {}
        self._fresh: deque[tuple[float, actors.Pid]] = deque()
        """(drain time, pid) of recent spawns, re-checked by :meth:`_recheck_fresh`."""
        self._fresh_checked = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._alarm: Alarm | None = None
        self.watchdog_wakes = 0
        """Times the watchdog woke the agent's thread (tests and benchmarks)."""
        """The watchdog's Linux alarm (agent/_alarm.py), made at startup; None: a timer of the agent's loop."""
        """Fires when the host's tick is overdue (agent loop; see :meth:`_on_watchdog`)."""
        self._next_sample = 0.0
        self._scans = 0
        self._host_tid: int | None = None
        self._host_last: float | None = None
        self._tick_due: float | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._block_lag = 0.0
        self._last_drain = 0.0
        self._lag_max = 0.0
        self._lag_last = 0.0
        self._blocked_since: float | None = None
        self._blocked_pid: str | None = None
        self.holding = False
        """True inside a drain or a tick's work: sessions queue without waking
        their writer tasks, and :meth:`_flush_sessions` writes at the end."""
        self._stopping = False
        self._watching = False
        """An observer is attached (agent thread writes; the host's tick reads)."""
        self._hooks_always = not self.source.hooks_on_demand or bool(self.dump_dir)
        """The source's hooks stay installed with nobody attached: a post-mortem
        dump wants the crash reports of the whole run."""
        self._hooked = False
        self._hooks_lock = threading.Lock()
        self._hooks_event: asyncio.Event | None = None
        """Set (agent loop) once the hooks asked for by an attach are installed."""

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> Agent:
        """Start the thread, bind, and return once listening (or raise)."""
        try:
            if asyncio.get_running_loop() is self.source.loop:
                self._host_tid = threading.get_ident()
        except RuntimeError:
            pass
        self._thread = threading.Thread(target=self._main, name="observer-agent", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            raise self._startup_error
        self.source.attach(self)
        if self._hooks_always and self.source.hooks_on_demand:
            self._watching_hooks(True)
        if self.dump_dir and isinstance(self.source, ActorsSource):
            self.dumper = Dumper(self, self.dump_dir, gzip=self.dump_gzip).start()
        if self._host_tid is None:
            self.source.loop.call_soon_threadsafe(self._record_host_thread)
        log.info("agent listening on %s:%s%s", self.host, self.port, " (TLS)" if self.ssl_context else "")
        return self

    def _record_host_thread(self) -> None:
        self._host_tid = threading.get_ident()

    def _main(self) -> None:
        self.work_lock.acquire()  # let go only while the loop waits in select
        try:
            self._run()
        finally:
            self.work_lock.release()

    def _run(self) -> None:
        loop = asyncio.SelectorEventLoop(_host_drain.LockedSelector(self.work_lock))
        self._loop = loop
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._cleanup())
            finally:
                loop.close()

    async def _startup(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connect,
            self.host,
            self.port,
            ssl=self.ssl_context,
            limit=self.max_frame + 64,
            backlog=1024,  # a flood of connections must not overflow the queue and drop an observer's SYN
        )
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]
        self._hooks_event = asyncio.Event()
        alarm = Alarm.create()
        if alarm is not None:
            asyncio.get_running_loop().add_reader(alarm.fd, self._on_watchdog)
            self._alarm = alarm
        # no watchdog yet: it runs while an observer is attached (sessions_changed)
        try:
            self.source.loop.call_soon_threadsafe(self._host_tick)
        except RuntimeError:  # the host loop is closed: no ticks, the watchdog samples
            pass

    async def _cleanup(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        alarm, self._alarm = self._alarm, None
        if alarm is not None:
            asyncio.get_running_loop().remove_reader(alarm.fd)
            alarm.close()
        if self._server is not None:
            self._server.close()
        for s in list(self.sessions):
            try:
                s.writer.close()
            except Exception:
                pass
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)

    def stop(self) -> None:
        """Detach from the node and stop the thread. Idempotent."""
        if self._stopping:
            return
        self._stopping = True
        with self._hooks_lock:
            self.source.detach()
            self._hooked = False
        if self.dumper is not None:
            self.dumper.stop()
        handle = self._tick_handle
        if handle is not None:
            try:
                self.source.loop.call_soon_threadsafe(handle.cancel)
            except RuntimeError:  # host loop already closed
                pass
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(10)
        for key in {k for s in self.sessions for k in s.traced}:
            self._untrace(key)
        self.tracer.stop_all()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def token_for(self, role: str) -> bytes | None:
        return self._tokens.get(role)

    # -- connections -------------------------------------------------------------------------------

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        try:
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        except Exception:
            pass
        session = Session(self, reader, writer)
        if not self.preauth.admit(session.peer_host, writer, reader):  # no room: answered busy (agent._preauth)
            return
        self.sessions.append(session)
        try:
            await session.run()
        except asyncio.CancelledError:  # the agent is stopping; end this handler quietly
            pass

    def _session_closed(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        self.sessions_changed()
        self.tracer.session_closed(session)
        for key in list(session.traced):
            if not self.traced_elsewhere(key, session):
                self._untrace(key)
        session.traced.clear()
        session.clear_events()
        session.samples.clear()

    def ready_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.ready]

    def traced_elsewhere(self, key: str, session: Session) -> bool:
        return any(key in s.traced for s in self.sessions if s is not session)

    def _untrace(self, key: str) -> None:
        try:
            pid = actors.Pid.parse(key)
        except ValueError:
            return
        node = self.node

        def off() -> None:
            p = actors.find_process(node, pid)
            if p is not None:
                p.traced = False
            self.collector.forget_trace(pid)

        try:
            node.loop.call_soon_threadsafe(off)
        except RuntimeError:
            pass

    # -- snapshot helpers (agent thread) ---------------------------------------------------------------

    def node_meta(self) -> P.NodeMeta:
        meta = {
            **self.source.meta(),
            "node_kind": self.source.kind,
            "os_pid": os.getpid(),
            "host": socket.gethostname(),
            "python": sys.version.split()[0],
            "agent_version": AGENT_VERSION,
            "sample_hz": self.sample_hz,
        }
        return cast(P.NodeMeta, meta)

    def node_processes(self) -> list[Any]:
        """The source's units for a snapshot (processes, or tasks and scopes)."""
        return self.source.units()

    def node_records(self, units: list[Any]) -> list[dict[str, Any]]:
        return self.source.records(units)

    def records(self, procs: list[actors.Process]) -> list[P.ProcessRecord]:
        out = []
        cache = self._cache
        for p in procs:
            if not p.alive:
                continue
            try:
                rec, meta = record_and_meta(p)
            except Exception:  # changed under our feet: skip, the next event fixes it
                continue
            out.append(rec)
            # note the meta this observer is sent, so a later change yields an ``update``
            ent = cache.get(p.pid.id)
            if ent is None:
                cache[p.pid.id] = [rec["pid"], None, meta, p.msgs_in]
            else:
                ent[2] = meta
        return out

    def names(self) -> dict[str, str]:
        return self.source.names()

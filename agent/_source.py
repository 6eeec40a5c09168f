"""The seam between the agent and what it observes: a *source*.

The agent (sessions, the wire protocol, security, the hand-off and the
watchdog) knows nothing of the runtime it watches beyond this interface. A
source owns the host-side hooks (an instrument, a task factory), turns what
they queue into wire events, lists its units (processes, tasks, scopes) for
snapshots, samples their counters, and supplies the commands it supports.

Two sources exist: :class:`ActorsSource` (an :class:`actors.Node`) and
:class:`agent._aio_source.AsyncioSource` (a plain asyncio event loop). A
third runtime is a new subclass; nothing else changes.

Threads: :meth:`Source.attach` and :meth:`Source.detach` are called from the
thread that starts or stops the agent; every other method runs on the agent's
thread, reading the host's structures without changing them (units that
vanish mid-read are skipped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import actors

from . import protocol as P
from ._encode import event_dict, exit_event, spawn_event

if TYPE_CHECKING:
    from ._agent import Agent
    from ._commands import Commands
    from ._session import Session

Handler = Callable[["Session", dict[str, Any]], Awaitable[Any]]


class Source:
    """What the agent needs from the thing it observes."""

    kind: str = ""
    """``node_kind`` in the handshake: ``actors`` or ``asyncio``."""
    commands: frozenset[str] = frozenset()
    """The protocol commands this source supports (sessions are offered the
    intersection with their role's)."""
    loop: asyncio.AbstractEventLoop
    """The host's event loop (it may change: see :meth:`AsyncioSource.retarget`)."""

    hooks_on_demand: bool = False
    """True if the hooks that feed ``agent.collector`` may wait for an
    observer: :meth:`attach` then only binds the source to the agent, and the
    agent calls :meth:`hook` as the first observer attaches and
    :meth:`unhook` as the last one leaves, so that a node nobody watches pays
    nothing for its agent (docs/protocol.md §11.1). False: :meth:`attach`
    installs them for good (an asyncio source's task factory must see every
    task from the start)."""

    def attach(self, agent: Agent) -> None:
        """Install the host-side hooks that feed ``agent.collector`` (with
        :attr:`hooks_on_demand`: only bind to ``agent``)."""
        raise NotImplementedError

    def detach(self) -> None:
        """Remove them (idempotent)."""
        raise NotImplementedError

    def hook(self) -> None:
        """:attr:`hooks_on_demand` sources: install the hooks (called once,
        then not again before :meth:`unhook`; on the host loop's thread, or
        on the agent's when that loop does not run its callbacks)."""

    def unhook(self) -> None:
        """:attr:`hooks_on_demand` sources: remove them (idempotent)."""

    def meta(self) -> dict[str, Any]:
        """``node_id``, ``started_at``, ``process_count`` and any kind-specific fields."""
        raise NotImplementedError

    def count(self) -> int:
        """Units alive now."""
        raise NotImplementedError

    def units(self) -> list[Any]:
        """The units for a snapshot, in a stable order (records are built in chunks)."""
        raise NotImplementedError

    def records(self, units: list[Any]) -> list[Any]:
        """Snapshot records (``protocol.PROCESS_FIELDS``, plus kind-specific fields)."""
        raise NotImplementedError

    def names(self) -> dict[str, str]:
        return {}

    def encode(self, ev: Any) -> Any:
        """One queued host event as a wire event (without ``seq``), or None."""
        raise NotImplementedError

    def account(self, ev: Any) -> None:
        """Nobody is attached: keep the counters (crashes, restarts) an event implies."""
        raise NotImplementedError

    def scan(self) -> tuple[list[list[Any]], int]:
        """Changed sample rows and messages handled since the last scan."""
        raise NotImplementedError

    def scan_step(self, budget: float) -> tuple[list[list[Any]], int] | None:
        """A scan done in steps of about ``budget`` seconds (a source with many
        units spreads it over several calls, so that no call holds the GIL long):
        what :meth:`scan` returns once the scan is done, None until then.
        By default, the whole :meth:`scan` at once."""
        return self.scan()

    def stats(self) -> dict[str, Any]:
        """Whole-node figures added to each ``samples`` message."""
        return {}

    def totals(self, restarts: int, crashes: int) -> tuple[int, int]:
        """The node's running totals of restarts and crashes for ``samples``,
        given what the agent counted going by: by default, those."""
        return restarts, crashes

    def recheck(self) -> None:
        """Periodic re-check of freshly created units (agent thread)."""

    def owner(self, task: asyncio.Task[Any] | None) -> tuple[str | None, str | None]:
        """The (pid, name) that runs ``task``, for blocked-loop reports."""
        return None, None

    def handlers(self, commands: Commands) -> dict[str, Handler]:
        """Command handlers that replace or add to :class:`Commands`' own."""
        return {}


class ActorsSource(Source):
    """An :class:`actors.Node`, seen through its instrument hook.

    The per-process bookkeeping (records, sampling, the fresh-spawn re-check)
    is the agent's ``Sampling`` mixin and ``_encode``; this class is where the
    agent reaches it."""

    kind = "actors"
    commands = frozenset(c for c in P.ALL_COMMANDS if c != "cancel")

    def __init__(self, node: actors.Node) -> None:
        self.node = node
        self.loop = node.loop
        self.agent: Agent | None = None

    hooks_on_demand = True
    """With no instrument registered the node builds no event and no crash
    report at all (see :mod:`actors._events`): an agent nobody watches costs
    the node nothing (unless it keeps crash reports for post-mortem dumps)."""

    def attach(self, agent: Agent) -> None:
        self.agent = agent

    def detach(self) -> None:
        self.unhook()

    def hook(self) -> None:
        # the node's instrument list is copy-on-write (one attribute store):
        # safe from the agent's thread too, when the host's loop does not run
        self.node.add_instrument(self._agent().collector)

    def unhook(self) -> None:
        if self.agent is not None:
            self.node.remove_instrument(self.agent.collector)

    def _agent(self) -> Agent:
        assert self.agent is not None, "the source is not attached"
        return self.agent

    def meta(self) -> dict[str, Any]:
        node = self.node
        return {"node_id": node.node_id, "started_at": node.started_at, "process_count": node.process_count()}

    def count(self) -> int:
        return self.node.process_count()

    def units(self) -> list[Any]:
        return list(self.node.iter_processes())

    def records(self, units: list[Any]) -> list[Any]:
        return self._agent().records(units)

    def names(self) -> dict[str, str]:
        node = self.node
        return {n: str(pid) for n in node.registered() if (pid := node.whereis(n)) is not None}

    def totals(self, restarts: int, crashes: int) -> tuple[int, int]:
        # the runtime keeps them itself: right whether or not an observer was
        # attached when they happened (the instrument is installed on attach)
        return self.node.restarts_total, self.node.crashes_total

    def account(self, ev: Any) -> None:
        ag = self._agent()
        t = type(ev)
        if t is actors.Restarted:
            ag.restarts += 1
        elif t is actors.Exited:
            if isinstance(ev.reason, BaseException):
                ag.crashes += 1
            if ev.report is not None:
                ag.crash_log.note(ev.report)

    def encode(self, ev: Any) -> Any:
        ag = self.agent  # (not _agent(): a call per event)
        assert ag is not None, "the source is not attached"
        if type(ev) is actors.Spawned:
            p = actors.find_process(self.node, ev.pid)
            spawn, meta = spawn_event(ev, p)
            if p is not None and meta is not None:  # what the observer now knows (a later change: an update)
                ent = ag._cache.get(ev.pid.id)
                if ent is None:
                    ag._cache[ev.pid.id] = [spawn["pid"], None, meta, p.msgs_in]
                else:
                    ent[2] = meta
            ag._fresh.append((ag._last_drain, ev.pid))
            return spawn
        if type(ev) is actors.Exited:
            ag._cache.pop(ev.pid.id, None)
            if ag.tracer.by_pid:
                ag.tracer.exited(ev.pid)
            report = ev.report
            rep = None if report is None else ag.crash_log.note(report)
            d: dict[str, Any] = exit_event(ev, ag.policy, rep)  # type: ignore[assignment]
            d["report"] = rep
            return d
        return event_dict(ev, self.node, ag.policy, ag._encode_value)

    def scan(self) -> tuple[list[list[Any]], int]:
        return self._agent()._scan()

    def scan_step(self, budget: float) -> tuple[list[list[Any]], int] | None:
        return self._agent()._scan_step(budget)

    def recheck(self) -> None:
        # at most once a heartbeat (it is asked at every drain too): each
        # check re-reads up to FRESH_MAX processes, ~0.5 ms on a churning
        # node, which a crash storm paid twenty times a second
        ag = self._agent()
        if ag._fresh and time.monotonic() - ag._fresh_checked >= ag.heartbeat:
            ag._recheck_fresh()

    def owner(self, task: asyncio.Task[Any] | None) -> tuple[str | None, str | None]:
        p = actors.task_process(self.node, task)
        return (str(p.pid), p.name or p.label) if p is not None else (None, None)

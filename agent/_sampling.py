"""The agent's sampling (agent thread): counter rows and ``update`` events for
every live process, memory estimates a slice at a time, and the re-check of
freshly spawned processes. A mixin of :class:`agent._agent.Agent`, which
calls these from the host's tick (``Agent._on_tick``) and its drain.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import actors
from actors import estimate_memory, find_process, process_status

from . import messages as M
from ._encode import meta_dict, meta_of

if TYPE_CHECKING:
    from ._collector import Collector
    from ._session import Session
    from ._source import Source

log = logging.getLogger("agent")

MEMORY_PER_SCAN = 250
"""Processes whose memory estimate each sampling scan refreshes (see ``_scan``)."""
FRESH_S = 1.0
"""How long after its spawn a process's meta is re-checked (see ``_recheck_fresh``)..."""
FRESH_EVERY_S = 0.05
"""... at most this often ..."""
FRESH_MAX = 256
"""... for at most this many of the latest spawns (a churning node pays ~0.5 ms per check)."""


class Sampling:
    """Needs the agent's node, sessions, counters and ``_publish``."""

    node: actors.Node
    source: Source
    sessions: list[Session]
    collector: Collector
    seq: int
    restarts: int
    crashes: int
    events_dropped: int
    messages_total: int
    _lag_max: float
    _cache: dict[int, list[Any]]
    _fresh: deque[tuple[float, actors.Pid]]
    _fresh_checked: float
    _scans: int

    def _publish(self, body: M.Event | dict[str, Any]) -> None:
        raise NotImplementedError

    def _recheck_fresh(self) -> None:
        """A process spawned in the last ``FRESH_S`` seconds may not have
        finished starting when its spawn went out (a supervisor is a worker
        with no budget until its loop runs): compare its meta again at the
        next drains and heartbeats, and send an ``update`` at once, not at the
        next sample (which may be seconds away)."""
        now = time.monotonic()
        if now - self._fresh_checked < FRESH_EVERY_S:
            return
        self._fresh_checked = now
        fresh = self._fresh
        while fresh and (fresh[0][0] < now - FRESH_S or len(fresh) > FRESH_MAX):
            fresh.popleft()
        node, cache = self.node, self._cache
        for _, pid in fresh:
            p = find_process(node, pid)
            ent = cache.get(pid.id)
            if p is None or ent is None or not p.alive:
                continue
            try:
                meta = meta_of(p)
            except Exception:  # changed under our feet: the sampler catches up
                continue
            if meta != ent[2]:
                ent[2] = meta
                self._publish({"ev": "update", "pid": ent[0], **meta_dict(meta), "time": time.time()})

    def _sample_once(self) -> float:
        """One sampling scan pushed to every session; returns its cost in seconds."""
        t0 = time.perf_counter()
        try:
            rows, msgs = self.source.scan()
        except Exception:
            log.exception("agent: sampling failed")
            rows, msgs = [], 0
        cost = time.perf_counter() - t0
        self.messages_total += msgs
        stats: M.NodeStats = {
            "time": time.time(),
            "process_count": self.source.count(),
            "messages": msgs,
            "messages_total": self.messages_total,
            "restarts": self.restarts,
            "crashes": self.crashes,
            "loop_lag_ms": round(self._lag_max * 1000, 3),
            "events_dropped": self.events_dropped,
            "trace_dropped": self.collector.trace_dropped,
            "seq": self.seq,
            "sample_cost_ms": round(cost * 1000, 3),
        }
        cast(dict[str, Any], stats).update(self.source.stats())  # the source's own figures (NotRequired fields)
        self._lag_max = 0.0
        for s in self.sessions:
            s.push_samples(rows, stats)
        return cost

    def _scan(self) -> tuple[list[list[Any]], int]:
        cache = self._cache
        rows: list[list[Any]] = []
        msgs = 0
        seen = 0
        # memory estimates cost a walk: each scan refreshes a slice of about
        # MEMORY_PER_SCAN processes (~6 us each; a node of 10,000: each every 10 s at 4 Hz)
        every = max(1, len(cache) // MEMORY_PER_SCAN)
        phase = self._scans % every
        self._scans += 1
        for i, p in enumerate(self.node.iter_processes()):
            if not p.alive:
                continue
            seen += 1
            ent = cache.get(p.pid.id)
            if ent is None or ent[1] is None or i % every == phase:
                try:
                    mem: int | None = estimate_memory(p)
                except Exception:  # changed under our feet (another thread's mailbox): next time
                    mem = ent[1][7] if ent is not None and ent[1] is not None else None
            else:
                mem = ent[1][7]
            row: list[Any] = [
                None,
                p.mailbox_len,
                p.msgs_in,
                p.msgs_out,
                p.handled,
                round(p.handler_time, 6),
                process_status(p),
                mem,
            ]
            if ent is None:
                key = str(p.pid)
                row[0] = key
                cache[p.pid.id] = [key, row, meta_of(p), p.msgs_in]
                rows.append(row)
                continue
            row[0] = ent[0]
            if row != ent[1]:  # ent[1] is None when known from a spawn or a snapshot, never sampled
                if ent[1] is not None:
                    msgs += p.msgs_in - ent[3]
                ent[1] = row
                ent[3] = p.msgs_in
                rows.append(row)
            meta = meta_of(p)
            if meta != ent[2]:
                ent[2] = meta
                self._publish({"ev": "update", "pid": ent[0], **meta_dict(meta), "time": time.time()})
        if len(cache) > seen * 2 + 1000:
            live = {p.pid.id for p in self.node.iter_processes()}
            for k in [k for k in cache if k not in live]:
                del cache[k]
        return rows, msgs

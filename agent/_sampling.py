"""The agent's sampling: counter rows and ``update`` events for every live
process, memory estimates a slice at a time, and the re-check of freshly
spawned processes. A mixin of :class:`agent._agent.Agent`, which calls these
from the host's tick (``Agent._on_tick``, or on the host's own thread,
agent/_host_drain.py) and its drain.

A sampling *sweep* over the node's processes is done in steps of at most
``STEP_S`` (0.5 ms: a hundred or two processes). Whichever thread runs a
step holds the GIL for it (the host's own thread, when the step runs there),
so the node's loop never waits longer than one step for the sampler; a sweep
of 10,000 processes done in one go held it for 20-200 ms. The steps of one
sweep follow each other on the host's loop until the sweep is done; then its
rows and the node's figures go to every session at once, so an observer
still gets one consistent sample per sweep.

Between two steps the host's loop is left alone for as long as the last step
took (``STEP_GAP``): the next step is a timer, not a ready callback. Queued
with ``call_soon``, a step ran in *every* iteration of the loop while a sweep
lasted, so whatever takes several iterations paid a step for each: a
gen_server's restart (five iterations from the kill to the ``restart``
event) came back 5-10 ms late, and the host's thread, never waiting in
``select``, gave the GIL to the agent's thread (a command read, a reply)
only when the interpreter forced it (``sys.getswitchinterval()``, 5 ms).
Measured on the sustained chaos workload (``python -m bench chaos
--sustained-only``), at 100 kills/s: kills made during a sweep saw 6 sampler
steps (p99) between the kill and the restart, now 1; their recovery p90 went
from 10-22 ms to under 3 ms. A sweep takes about twice its CPU time in wall
time (its cost, and the ~5 % of a core it may use, are the same).

A step that comes due while the host's loop has other callbacks ready (a
restart on its way through the loop's iterations, a command handed over by the
agent's thread) waits another ``STEP_GAP_MIN_S``, up to ``STEP_DEFER_MAX``
times in a row, so that the sweep takes the loop's idle moments rather than
its busy ones (asyncio's own loop: its ready queue is read; uvloop's is not
visible and there steps do not wait). At 1,000 kills/s a sweep lasts 400-500
ms of wall time and a third of the kills fall inside one: traced per hop on a
loaded machine (three interleaved pairs), their recovery p99 went from 21-23
ms to 11-16 ms and the slowest 1 % of them saw 0.7 steps instead of 2; all
kills' p99 from 16-19 ms to 10-13 ms. Steps of 0.5 ms rather than 1 ms then
took the rest of that tail (six interleaved pairs on a quieter machine, of
which three lost to load: those kills' p99 9.5-12.2 ms -> 6.0-7.7 ms, as low
as the other kills'; all kills' 7.2-10.4 -> 5.8-7.8 ms); a sweep lasts longer
in wall time (400-650 ms at 1,000 kills/s) for the same CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
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
"""Processes whose memory estimate each sampling sweep refreshes (see ``_scan_step``)."""
STEP_S = 0.0005
"""Longest a step of a sampling sweep runs (checked every ``STEP_CHECK`` processes)."""
STEP_CHECK = 32
"""Processes sampled between two looks at the clock."""
STEP_GAP = 1.0
"""Between two steps of a sweep the host's loop is left alone for this many times the
last step's length (see the module docstring) ..."""
STEP_GAP_MIN_S = 0.0005
"""... and at least this long (the host's thread then waits in ``select``: the agent's
thread gets the GIL at once)."""
STEP_DEFER_MAX = 10
"""A step due while the host's loop has other callbacks ready waits another
``STEP_GAP_MIN_S``, up to this many times in a row (then it runs: a sweep always ends)."""
FRESH_S = 1.0
"""How long after its spawn a process's meta is re-checked (see ``_recheck_fresh``)..."""
FRESH_EVERY_S = 0.05
"""... at most this often ..."""
FRESH_MAX = 256
"""... for at most this many of the latest spawns (a churning node pays ~0.5 ms per check)."""


@dataclasses.dataclass(slots=True, eq=False)
class Sweep:
    """One sampling sweep of an actors node, in progress."""

    procs: list[actors.Process]
    """The processes alive when it began (those spawned since wait for the next)."""
    every: int
    """A process's memory is estimated when its index modulo ``every`` is ``phase``."""
    phase: int
    i: int = 0
    """Index of the next process to sample."""
    rows: list[tuple[actors.Process, list[Any]]] = dataclasses.field(default_factory=list)
    """The changed rows so far, with their process (rows of processes dead by the end are dropped)."""
    msgs: int = 0
    """Messages received, summed over the processes sampled so far."""
    seen: int = 0
    """Processes alive when sampled."""


class Sampling:
    """Needs the agent's node, sessions, counters, clock and ``_publish``."""

    node: actors.Node
    source: Source
    sessions: list[Session]
    collector: Collector
    heartbeat: float
    sample_hz: float
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
    _next_sample: float
    _stopping: bool
    _host_tid: int | None
    _host_tick_work: Callable[[], bool] | None
    _sweep: Sweep | None = None
    """The actors node's sweep in progress (see ``_scan_step``)."""
    _sweep_since: float | None = None
    """When the sweep in progress began (monotonic), None between sweeps."""
    _sweep_cost: float = 0.0
    """Seconds its steps took so far."""
    _sweep_step_s = 0.0
    """How long the sweep's last step took (the gap before the next is sized on it)."""
    _sweep_next_queued = False
    """A step of the sweep is queued on the host's loop (see ``_sample_more``)."""
    _sweep_defers = 0
    """Times in a row the sweep's next step waited for the host's loop (``_sample_next``)."""
    sample_step_defers = 0
    """Times a step of a sampling sweep waited for the host's loop since the agent started."""
    sample_steps = 0
    """Steps of sampling sweeps taken since the agent started."""
    sample_step_max_s = 0.0
    """CPU time of the longest of them (its thread's: the host's own, or the agent's)."""

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

    def _sample_due(self, now: float) -> None:
        """Tick (either thread): the next step of the sampling sweep, or a new
        sweep when one is due. Sweeps start at ``sample_hz`` on average (on the
        tick's grid) and take at most ~5% of a core, whatever the node's size;
        a sweep not done in one step asks for its next (``_sample_more``)."""
        if not any(s.ready for s in self.sessions):
            self._sweep = None
            self._sweep_since = None
            return
        since = self._sweep_since
        if since is None:
            if now < self._next_sample:
                return
            since = self._sweep_since = now
            self._sweep_cost = 0.0
        if not self._sample_step():
            self._sample_more()
            return
        self._sweep_since = None
        period = 1.0 / self.sample_hz if self.sample_hz > 0 else 1.0
        nxt = max(self._next_sample + period, since + self._sweep_cost * 20 - self.heartbeat / 2)
        self._next_sample = nxt if nxt >= now else now + period

    def _sample_step(self) -> bool:
        """One step of the sweep (at most ``STEP_S``); at its end the rows and
        the node's figures go to every session. True when the sweep is done."""
        c0 = time.thread_time()
        try:
            return self._sample_step_timed()
        finally:
            self.sample_steps += 1
            cpu = time.thread_time() - c0
            if cpu > self.sample_step_max_s:
                self.sample_step_max_s = cpu

    def _sample_step_timed(self) -> bool:
        t0 = time.perf_counter()
        try:
            out = self.source.scan_step(STEP_S)
        except Exception:
            log.exception("agent: sampling failed")
            self._sweep = None
            out = [], 0
        step = self._sweep_step_s = time.perf_counter() - t0
        cost = self._sweep_cost = self._sweep_cost + step
        if out is None:
            return False
        rows, msgs = out
        self.messages_total += msgs
        restarts, crashes = self.source.totals(self.restarts, self.crashes)
        stats: M.NodeStats = {
            "time": time.time(),
            "process_count": self.source.count(),
            "messages": msgs,
            "messages_total": self.messages_total,
            "restarts": restarts,
            "crashes": crashes,
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
        return True

    def _sample_more(self) -> None:
        """The sweep is not done: its next step, on the host's loop after a gap
        as long as this step (``STEP_GAP``, at least ``STEP_GAP_MIN_S``), where
        it runs like a tick's work on the host's thread (``_host_tick_work``).
        If that cannot be done there (the agent's thread is busy, or the agent
        drains on its own thread: ``host_drain=False``), the next tick takes
        the next step."""
        if self._sweep_next_queued or self._host_tick_work is None or self._stopping:
            return
        loop = self.source.loop
        self._sweep_next_queued = True
        gap = max(STEP_GAP_MIN_S, self._sweep_step_s * STEP_GAP)
        try:
            if threading.get_ident() == self._host_tid:
                loop.call_later(gap, self._sample_next)
            else:
                loop.call_soon_threadsafe(loop.call_later, gap, self._sample_next)
        except RuntimeError:  # the host's loop is closed
            self._sweep_next_queued = False

    def _sample_next(self) -> None:
        """Host loop: the sweep's next step (with the rest of a tick's work), unless the
        loop has other callbacks ready: then it waits another ``STEP_GAP_MIN_S``, at most
        ``STEP_DEFER_MAX`` times in a row (see the module docstring)."""
        self._sweep_next_queued = False
        work = self._host_tick_work
        if work is None or self._stopping or self._sweep_since is None:
            return
        loop = self.source.loop
        # asyncio's own loop only (uvloop keeps its queue to itself: no deferral there)
        ready = getattr(loop, "_ready", None)
        if ready and self._sweep_defers < STEP_DEFER_MAX:
            self._sweep_defers += 1
            self.sample_step_defers += 1
            self._sweep_next_queued = True
            loop.call_later(STEP_GAP_MIN_S, self._sample_next)
            return
        self._sweep_defers = 0
        work()

    def _scan(self) -> tuple[list[list[Any]], int]:
        """A whole sweep at once (the sweep in progress, if any, finished)."""
        out = self._scan_step(math.inf)
        assert out is not None
        return out

    def _scan_step(self, budget: float) -> tuple[list[list[Any]], int] | None:
        """Sample the next processes of the sweep for about ``budget`` seconds
        (a new sweep if none is in progress); the sweep's changed rows and
        messages once it is done, None until then."""
        cache = self._cache
        sw = self._sweep
        if sw is None:
            # memory estimates cost a walk: each sweep refreshes a slice of about
            # MEMORY_PER_SCAN processes (~6 us each; a node of 10,000: each every 10 s at 4 Hz)
            every = max(1, len(cache) // MEMORY_PER_SCAN)
            sw = self._sweep = Sweep(list(self.node.iter_processes()), every, self._scans % every)
            self._scans += 1
        procs, every, phase, out = sw.procs, sw.every, sw.phase, sw.rows
        n = len(procs)
        i = sw.i
        deadline = time.perf_counter() + budget
        msgs = 0
        seen = 0
        try:
            while i < n:
                end = min(n, i + STEP_CHECK)
                while i < end:
                    p = procs[i]
                    i += 1
                    if not p.alive:
                        continue
                    seen += 1
                    ent = cache.get(p.pid.id)
                    last = ent[1] if ent is not None else None
                    if last is None or (i - 1) % every == phase:
                        try:
                            mem: int | None = estimate_memory(p)
                        except Exception:  # changed under our feet (another thread's mailbox): next time
                            mem = last[7] if last is not None else None
                    else:
                        mem = last[7]
                    mbox, m_in, m_out, handled = p.mailbox_len, p.msgs_in, p.msgs_out, p.handled
                    h_time, status = round(p.handler_time, 6), process_status(p)
                    if ent is None:
                        key = str(p.pid)
                        first = (key, mbox, m_in, m_out, handled, h_time, status, mem)
                        cache[p.pid.id] = [key, first, meta_of(p), m_in]
                        out.append((p, [key, mbox, m_in, m_out, handled, h_time, status, mem]))
                        continue
                    # compared field by field: an unchanged process costs no row (most of them, on a big node)
                    if (
                        last is None  # known from a spawn or a snapshot, never sampled
                        or last[2] != m_in
                        or last[1] != mbox
                        or last[3] != m_out
                        or last[4] != handled
                        or last[5] != h_time
                        or last[6] != status
                        or last[7] != mem
                    ):
                        if last is not None:
                            msgs += m_in - ent[3]
                        key = ent[0]
                        # the cache keeps a tuple (of plain values: the collector stops tracking it, so
                        # full collections of a big node do not walk one row per process); sessions get a list
                        ent[1] = (key, mbox, m_in, m_out, handled, h_time, status, mem)
                        ent[3] = m_in
                        out.append((p, [key, mbox, m_in, m_out, handled, h_time, status, mem]))
                    meta = meta_of(p)
                    if meta != ent[2]:
                        ent[2] = meta
                        self._publish({"ev": "update", "pid": ent[0], **meta_dict(meta), "time": time.time()})
                if time.perf_counter() >= deadline:
                    break
        finally:
            sw.i = i
            sw.msgs += msgs
            sw.seen += seen
        if i < n:
            return None
        self._sweep = None
        if len(cache) > sw.seen * 2 + 1000:
            live = {p.pid.id for p in self.node.iter_processes()}
            for k in [k for k in cache if k not in live]:
                del cache[k]
        return [row for p, row in out if p.alive], sw.msgs

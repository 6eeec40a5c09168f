"""Kill campaigns: the schedule, victims drawn from a pool, the budget check, the kill command.

:class:`KillCampaign` is the part of :class:`~observer.chaos.engine.Engine`
that carries out one kill action (:class:`~observer.chaos.experiment.KillSpec`).

Schedule
    One attempt every ``interval_ms`` (± ``jitter_ms``; ``burst_size`` at
    once for a burst), for ``duration_s`` and/or ``kills`` attempts. Without
    jitter the schedule is a grid of slots counted by index (no float drift);
    when the campaign is more than 1 s behind, the attempts beyond that are
    dropped and counted in ``skipped.late``, and so are those still owed when
    the duration ends: ``attempted`` is always rate x duration.

Victims
    Drawn from a :class:`~observer.chaos.targets.CandidatePool` kept up to
    date from the model's changes; ``TRIES`` of them per attempt, the first
    that fits is killed.

Within budget
    Before each kill the model says what it would do
    (:meth:`NodeModel.kill_preview`, through :meth:`BudgetLedger.plan`), and
    each supervisor that would spend a restart is checked against the
    ledger: a kill that would take one past ``intensity - budget_margin`` is
    skipped (``skipped.would_exceed_budget``).

In flight
    At most ``INFLIGHT`` kill commands wait for their reply at once; a kill's
    ``time`` (its recovery's start) is stamped right before its command is
    written.

Threading rules
    Everything here runs on the attach loop thread; the ``audit`` hook
    (blocking) runs in a worker thread via :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import protocol as P
from agent.client import AgentError

from ..attach import Attachment
from ..model import NodeModel
from .budget import BudgetLedger
from .experiment import KillSpec
from .hypothesis import PathKey, path_in, resolve
from .journal import Journal
from .targets import CandidatePool
from .tracking import _Kill

__all__ = ["GRACE_S", "INFLIGHT", "TRIES", "AuditHook", "KillCampaign"]

AuditHook = Callable[[str, dict[str, Any]], int]
"""``audit(target, args) -> audit id`` (blocking; raises to refuse the kill)."""

GRACE_S = 1.0
"""Extra wait for a restart event to arrive (stream and batching latency) before a kill counts as lost."""
TRIES = 8
"""Random victims tried per kill before it counts as skipped (a full budget spares one, not all)."""
INFLIGHT = 12
"""Kill commands in flight at once (the agent allows 16 per session)."""


class KillCampaign:
    """The engine's kill campaigns (see the module docstring)."""

    att: Attachment
    model: NodeModel
    journal: Journal
    ledger: BudgetLedger
    audit: AuditHook | None
    id: str
    _stop: bool
    _wake: asyncio.Event | None
    _pending: dict[str, _Kill]
    _recent_by_sup: dict[str, deque[_Kill]]
    _down: set[str]
    _tasks: set[asyncio.Task[None]]
    _pool: CandidatePool | None
    _launched: int
    _rng: random.Random
    _track_ms: float

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def abort_now(self, reason: str) -> None:
        raise NotImplementedError

    if TYPE_CHECKING:  # KillTracker's (a stub here would hide it, whatever the order of the bases)

        def _budget_note(
            self, sup: str, *, foreign: bool = False, kill: bool = False, used: int | None = None
        ) -> None: ...

    async def _campaign(self, spec: KillSpec) -> None:
        loop = asyncio.get_running_loop()
        self._rng = random.Random(spec.seed)
        sem = asyncio.Semaphore(INFLIGHT)
        start = loop.time()
        next_at = start
        seq_i = 0
        slot = 0  # slots of the schedule reached or counted late (whole steps, no jitter: a grid)
        grid = spec.duration_s is not None and spec.policy != "sequence" and spec.interval_ms > 0 and not spec.jitter_ms
        slots = math.ceil(spec.duration_s * 1000.0 / spec.interval_ms - 1e-6) if grid and spec.duration_s else 0
        self._launched = 0
        pool = self._pool = CandidatePool(self.model, spec)
        pool_at = -1.0
        while not self._stop:
            now = loop.time()
            if spec.duration_s is not None and now - start >= spec.duration_s:
                step = spec.interval_ms / 1000.0
                end = start + spec.duration_s
                if grid:  # behind at the end: the slots still owed, counted on the grid (no float drift)
                    self._late(spec, slots - slot)
                elif spec.policy != "sequence" and step > 0:
                    self._late(spec, math.ceil((end - next_at) / step - 1e-6))  # (not a rounding error's)
                break
            if grid and slot >= slots:  # every slot made or counted (a drifted last one is not an extra):
                next_at = max(next_at, start + (spec.duration_s or 0.0) + 1e-3)  # wait out the duration
            if spec.kills is not None and self._launched >= spec.kills:
                break
            if spec.policy == "sequence" and seq_i >= len(spec.sequence):
                break
            if next_at > now:
                assert self._wake is not None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_at - now):
                        await self._wake.wait()
                continue
            n = spec.burst_size if spec.policy == "burst" else 1
            for _ in range(n):
                if self._stop or (spec.kills is not None and self._launched >= spec.kills):
                    break
                self._launched += 1  # attempts: within budget, some are skipped
                with self.journal.lock:
                    self.journal.attempted += 1
                if spec.policy == "sequence":
                    target = resolve(self.model, spec.sequence[seq_i])
                    seq_i += 1
                    if target is None:
                        self._skip("gone")
                        continue
                    tries = [target]
                else:
                    if pool.stale or (not len(pool) and loop.time() - pool_at > 0.05):  # victims come back
                        pool.refresh(self._down)
                        pool_at = loop.time()
                    if not len(pool):
                        self._skip("no_candidate")
                        continue
                    tries = pool.sample(self._rng, TRIES)
                await sem.acquire()
                if self._stop:
                    sem.release()
                    break
                if not self._fire(spec, tries, sem):
                    sem.release()
            step = spec.interval_ms / 1000.0
            if spec.jitter_ms:
                step += self._rng.uniform(-spec.jitter_ms, spec.jitter_ms) / 1000.0
            next_at += max(step, 0.0)
            slot += 1
            floor = loop.time() - 1.0  # never a backlog over 1 s: attempts further behind are dropped
            if next_at < floor:
                if step > 0:  # whole slots: the schedule stays on its grid, every slot is made or counted
                    lost = math.ceil((floor - next_at) / step)
                    if grid:
                        lost = min(lost, slots - slot)
                    self._late(spec, lost)
                    next_at += lost * step
                    slot += lost
                else:
                    next_at = floor

    def _late(self, spec: KillSpec, slots: int) -> None:
        """``slots`` times the schedule owed were never reached: the engine fell behind."""
        n = slots * (spec.burst_size if spec.policy == "burst" else 1)
        if n > 0:
            with self.journal.lock:
                self.journal.attempted += n
                self.journal.skipped["late"] = self.journal.skipped.get("late", 0) + n

    def _skip(self, why: str) -> None:
        with self.journal.lock:
            self.journal.skipped[why] = self.journal.skipped.get(why, 0) + 1

    def _fire(self, spec: KillSpec, tries: list[str], sem: asyncio.Semaphore) -> bool:
        """Kill the first of ``tries`` that is there and fits the budgets (synchronously up to the
        send). False: skipped (counted under the last reason)."""
        why = "gone"
        for pid in tries:
            if spec.mode == "within_budget":
                with self.model.view() as v:
                    own = v.record(pid).get("supervisor") if pid in v else None
                if own and self.ledger.full(own, spec.budget_margin):
                    why = "would_exceed_budget"
                    continue
            plan = self.ledger.plan(self.model, pid, spec.reason)
            if plan is None:
                continue
            units, down, dies = plan
            refused, used_after = self.ledger.check(units, spec.budget_margin)
            if spec.mode == "within_budget" and refused is not None:
                why = refused if why != "would_exceed_budget" else why
                continue
            return self._start_kill(spec, pid, units, down, dies, used_after, sem)
        self._skip(why)
        return False

    def _start_kill(
        self,
        spec: KillSpec,
        pid: str,
        units: dict[str, int],
        down: list[str],
        dies: bool,
        used_after: dict[str, int],
        sem: asyncio.Semaphore,
    ) -> bool:
        with self.model.view() as v:
            r = dict(v.record(pid)) if pid in v else None
            path: PathKey | None = path_in(v, pid) if r is not None and r.get("child_id") is not None else None
        if r is None:
            self._skip("gone")
            return False
        now = time.time()
        rec: dict[str, Any] = {
            "n": len(self.journal.kills) + 1,
            "action": spec.name,
            "pid": pid,
            "name": r.get("name"),
            "label": r.get("label"),
            "kind": r.get("kind"),
            "supervisor": r.get("supervisor"),
            "child_id": r.get("child_id"),
            "path": list(path) if path else None,
            "reason": spec.reason,
            "mode": spec.mode,
            "time": now,
            "status": "pending" if dies else "survives",
            "new_pid": None,
            "recovery_ms": None,
            "restarted": [],
            "down": len(down),
            "budget_after": used_after,
        }
        k = _Kill(rec, now, now + self._track_ms / 1000.0 + GRACE_S, units)
        if dies:
            self._pending[pid] = k
            self._down.update(down)
            if self._pool is not None:
                for p in down:
                    self._pool.discard(p)
            self.ledger.hold(pid, r.get("supervisor"), units)
            for sup in units:
                self._budget_note(sup, kill=True, used=used_after.get(sup))
            if r.get("supervisor"):
                q = self._recent_by_sup.setdefault(str(r["supervisor"]), deque(maxlen=20))
                q.append(k)
        with self.journal.lock:
            if len(self.journal.kills) < 100_000:
                self.journal.kills.append(rec)
        coro = self._send(k, dies, sem)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send(self, k: _Kill, dies: bool, sem: asyncio.Semaphore) -> None:
        rec = k.rec
        audit_id: int | None = None
        try:
            if self.audit is not None:
                args = {"pid": rec["pid"], "reason": rec["reason"], "experiment": self.id}
                try:
                    audit_id = await asyncio.to_thread(self.audit, rec["pid"], args)
                except Exception as exc:
                    self._failed(k, "audit_unavailable", str(exc))
                    self.abort_now(f"audit log unavailable: {exc}")
                    return
                if self._stop:
                    self._failed(k, "aborted", "aborted before the kill was sent")
                    if self.att.store is not None:
                        self.att.store.audit_result(audit_id, {"status": "not sent: aborted"}, ok=False)
                    return
            k.sent = rec["time"] = time.time()
            k.deadline = k.sent + self._track_ms / 1000.0 + GRACE_S
            try:
                await self.att.acommand("kill", pid=rec["pid"], reason=rec["reason"], timeout=10.0)
                rec["ack_ms"] = round((time.time() - k.sent) * 1000.0, 3)
            except AgentError as exc:
                self._failed(k, exc.code, exc.message)
                return
            except (TimeoutError, OSError) as exc:
                self._failed(k, P.E_TIMEOUT, str(exc) or type(exc).__name__)
                return
            finally:
                if audit_id is not None and self.att.store is not None:
                    self.att.store.audit_result(audit_id, {"status": rec["status"]}, ok=rec["status"] != "error")
            if not dies:
                self._emit("kill", dict(rec))
        finally:
            sem.release()

    def _failed(self, k: _Kill, code: str, message: str) -> None:
        rec = k.rec
        rec["status"] = "error"
        rec["error"] = f"{code}: {message}"
        self._pending.pop(rec["pid"], None)
        self._down.discard(rec["pid"])
        self.ledger.release(rec["pid"])
        if self._pool is not None:
            self._pool.consider(rec["pid"])  # not killed: a candidate again if it still qualifies
        self._emit("kill", dict(rec))

"""The experiment runner: kills through the agent, watches the stream, checks the hypothesis.

:class:`Engine` runs one :class:`~observer.chaos.experiment.Experiment`
against one :class:`~observer.attach.Attachment` (operator role): it kills
with the agent's ``kill`` command and learns what happened from the events
the attachment feeds into its model (``exit``, ``restart``, ``gave_up``).

Within budget
    Before each kill the engine asks the model what the kill would do
    (:meth:`NodeModel.kill_preview`: which supervisors restart what by their
    strategy -- one_for_all and rest_for_one siblings included -- and which
    give up and escalate), then checks each supervisor that would spend a
    restart against its own ledger: restarts it saw (of any cause) within the
    supervisor's period, plus the kills it made whose restart has not been
    seen yet. A kill that would take any supervisor past ``intensity -
    budget_margin`` is skipped (counted in ``skipped.would_exceed_budget``).

Recovery
    A kill's recovery time is from the moment the ``kill`` command was sent
    to the ``time`` stamp of the agent's ``restart`` event naming the killed
    pid as ``old_pid`` (both wall clocks: on another host, keep them in sync).

Threading rules
    :meth:`Engine.arun` runs on the attach manager's loop thread (the
    attachment's change listener and commands live there). :meth:`start`
    schedules it from any other thread and returns a future; :meth:`abort`
    may be called from any thread but the loop's and returns once no further
    kill can be sent. Hooks (``on_progress``, ``audit``) are called on the loop
    thread; ``audit`` (blocking, e.g. the history store's) runs in a worker
    thread via :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent import protocol as P
from agent.client import AgentError

from ..attach import Attachment
from .budget import BudgetLedger
from .cancel import NOTE_NO_BUDGETS, CancelRunner, http_results, not_applicable
from .experiment import CancelSpec, Experiment, KillSpec
from .hypothesis import Baseline, CheckResult, PathKey, baseline, check, path_of, resolve
from .journal import Journal
from .targets import CandidatePool
from .tracking import KillTracker, _Kill

__all__ = ["Engine", "ProgressHook"]

log = logging.getLogger("observer.chaos")

ProgressHook = Callable[[str, dict[str, Any]], None]
"""``hook(kind, data)``: ``kill`` (a kill record, once resolved), ``check``, ``deviation``, ``phase``, ``end``."""
AuditHook = Callable[[str, dict[str, Any]], int]
"""``audit(target, args) -> audit id`` (blocking; raises to refuse the kill)."""

GRACE_S = 1.0
"""Extra wait for a restart event to arrive (stream and batching latency) before a kill counts as lost."""
DEFAULT_RECOVERY_MS = 5000.0
TRIES = 8
"""Random victims tried per kill before it counts as skipped (a full budget spares one, not all)."""
INFLIGHT = 12
"""Kill commands in flight at once (the agent allows 16 per session)."""


class ExperimentNotApplicable(RuntimeError):
    """The experiment asks for what the node's kind does not have (kills or budgets on an asyncio
    node, cancels on an actors node): refused before anything is done."""


class Engine(KillTracker, CancelRunner):
    """Runs one experiment on one attachment. See the module docstring."""

    def __init__(
        self,
        attachment: Attachment,
        experiment: Experiment,
        *,
        loop: asyncio.AbstractEventLoop,
        exp_id: str | None = None,
        on_progress: ProgressHook | None = None,
        audit: AuditHook | None = None,
        ready_timeout: float = 30.0,
    ) -> None:
        self.att = attachment
        self.model = attachment.model
        self.exp = experiment
        self.loop = loop
        self.id = exp_id or time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        self.on_progress = on_progress
        self.audit = audit
        self.ready_timeout = ready_timeout
        self.journal = Journal(self.id, attachment.name, experiment.to_dict(), time.time())
        self._stop = False
        self._aborted = False
        self._wake: asyncio.Event | None = None
        self._pending: dict[str, _Kill] = {}
        self._recent_by_sup: dict[str, deque[_Kill]] = {}
        self._down: set[str] = set()
        self.ledger = BudgetLedger(self.model)
        self._gone_ok: set[PathKey] = set()
        self._slow: list[dict[str, Any]] = []
        self._base: Baseline | None = None
        self._last_during: dict[str, tuple[str, bool, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool: CandidatePool | None = None
        self._launched = 0
        self._rng = random.Random()
        self._cancelled: dict[str, dict[str, Any]] = {}
        self._http: dict[int, tuple[bool, Any, dict[str, Any]]] = {}
        probe = next((p for p in experiment.probes if p.func == "recovery_ms"), None)
        self._recovery_limit = float(probe.tolerance) if probe is not None else None
        self._track_ms = self._recovery_limit if self._recovery_limit is not None else DEFAULT_RECOVERY_MS

    # -- driving (other threads) --------------------------------------------------------------------

    def start(self) -> concurrent.futures.Future[dict[str, Any]]:
        """Run on the loop; the future's result is the final journal (a dict)."""
        return asyncio.run_coroutine_threadsafe(self.arun(), self.loop)

    def run(self) -> dict[str, Any]:
        """Run and wait (from a thread other than the loop's)."""
        return self.start().result()

    def abort(self, reason: str = "aborted by the operator", timeout: float = 5.0) -> None:
        """Stop killing now; the experiment then checks the steady state and ends as ``aborted``.
        Returns once the loop has taken note: no kill is sent after that."""
        fut = asyncio.run_coroutine_threadsafe(self._aabort(reason), self.loop)
        with contextlib.suppress(concurrent.futures.TimeoutError):
            fut.result(timeout)

    async def _aabort(self, reason: str) -> None:
        self.abort_now(reason)

    def abort_now(self, reason: str) -> None:
        """:meth:`abort` for code already on the loop thread."""
        if self._aborted or self.journal.ended is not None:
            return
        self._aborted = True
        self._stop = True
        with self.journal.lock:
            self.journal.aborted_at = time.time()
            self.journal.abort_reason = reason
        if self._wake is not None:
            self._wake.set()
        self._emit("phase", {"phase": "aborting", "reason": reason})

    # -- the run (loop thread) -------------------------------------------------------------------------

    async def arun(self) -> dict[str, Any]:
        self._wake = asyncio.Event()
        j = self.journal
        off = self.att.on_change(self._on_changes)
        off_cancel = self.att.on_change(self._on_cancel_changes)
        try:
            await self._ready()
            j.started = time.time()
            self._base = baseline(self.model, j.started)
            self._emit("phase", {"phase": "before"})
            self._http = await http_results(self.exp.probes)
            if not self._check_all("before"):
                self._finish("failed", held=False, error="the steady-state hypothesis did not hold before the method")
                return j.to_dict()
            self._emit("phase", {"phase": "method"})
            checker = asyncio.get_running_loop().create_task(self._during())
            try:
                for spec in self.exp.method:
                    if self._stop:
                        break
                    with j.lock:
                        j.action = spec.name
                    if isinstance(spec, CancelSpec):
                        await self._cancel_campaign(spec)
                    else:
                        await self._campaign(spec)
                if self._tasks:
                    await asyncio.wait(list(self._tasks))
                await self._drain_pending()
            finally:
                checker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checker
            self._emit("phase", {"phase": "after"})
            await self._settle()
            await self._rollbacks()
            held = not j.deviations
            status = "aborted" if self._aborted else ("completed" if held else "deviated")
            self._finish(status, held=held)
        except asyncio.CancelledError:
            self._finish("aborted", held=None, error="cancelled")
            raise
        except ExperimentNotApplicable as exc:
            self._finish("failed", held=None, error=str(exc))
        except Exception as exc:
            log.exception("chaos: experiment %s failed", self.id)
            self._finish("failed", held=None, error=f"{type(exc).__name__}: {exc}")
        finally:
            off()
            off_cancel()
        return j.to_dict()

    async def _ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while self.model.status != "up" or self.att.client is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.att.name} is not attached ({self.att.last_error or self.model.status})")
            await asyncio.sleep(0.05)
        client = self.att.client
        commands = (client.welcome.get("commands") or []) if client else []
        kind = str((client.welcome.get("node_kind") or client.hello.get("node", {}).get("node_kind")) or "actors")
        why = not_applicable(self.exp, kind)
        if why is not None:
            raise ExperimentNotApplicable(f"{self.att.name}: {why}")
        if kind == "asyncio":
            with self.journal.lock:
                self.journal.notes.append(NOTE_NO_BUDGETS)
            if "cancel" not in commands:
                raise RuntimeError(f"{self.att.name}: attached without the operator role (no cancel command)")
        elif "kill" not in commands:
            raise RuntimeError(f"{self.att.name}: attached without the operator role (no kill command)")

    def _finish(self, status: str, *, held: bool | None, error: str | None = None) -> None:
        j = self.journal
        with j.lock:
            j.status = status
            j.hypothesis_held = held
            j.error = error
            j.ended = time.time()
        self._emit("end", {"status": status, "hypothesis_held": held})

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        if self.on_progress is not None:
            try:
                self.on_progress(kind, data)
            except Exception:
                log.exception("chaos: progress hook failed")

    # -- checks -------------------------------------------------------------------------------------------

    def _check_all(self, phase: str, *, record: bool = True) -> bool:
        ok = True
        now = time.time()
        with self.journal.lock:
            gave_up = list(self.journal.gave_up)
        for i, probe in enumerate(self.exp.probes):
            if probe.func == "http":
                got = self._http.get(i)
                r = None
                if got is not None:
                    r = CheckResult(probe.name, "http", phase, got[0], got[1], probe.tolerance, now, got[2])
            else:
                r = check(
                    probe, self.model, phase, now, base=self._base, gave_up=gave_up, slow_or_lost=self._slow,
                    gone_ok=self._gone_ok,
                )  # fmt: skip
            if r is None:
                continue
            if record and phase == "during":
                key = (probe.name, r.ok, repr(r.value))
                if self._last_during.get(probe.name) == key:
                    ok = ok and r.ok
                    continue  # during the method, a check is journaled when its result changes
                self._last_during[probe.name] = key
            if record:
                with self.journal.lock:
                    self.journal.checks.append(r.as_dict())
                self._emit("check", r.as_dict())
                if not r.ok and phase != "before":
                    msg = f"{probe.name}: {r.value!r} (tolerance {r.tolerance!r})"
                    self._deviate(probe.name, phase, msg, r.evidence)
            ok = ok and r.ok
        return ok

    def _deviate(self, probe: str, phase: str, message: str, evidence: dict[str, Any]) -> None:
        d = {"probe": probe, "phase": phase, "time": time.time(), "message": message, "evidence": evidence}
        with self.journal.lock:
            if any(
                x["probe"] == probe and x["phase"] == phase and x["message"] == message for x in self.journal.deviations
            ):
                return  # the same deviation, seen again by a later check
            self.journal.deviations.append(d)
        self._emit("deviation", d)
        if self.exp.abort_on_deviation and not self._stop:
            self._stop = True
            if self._wake is not None:
                self._wake.set()

    async def _during(self) -> None:
        next_probe = time.monotonic()
        # http probes run beside the loop (a slow URL must not hold up the other checks): each check
        # uses the latest answers
        http: asyncio.Task[dict[int, tuple[bool, Any, dict[str, Any]]]] | None = None
        has_http = any(p.func == "http" for p in self.exp.probes)
        try:
            while True:
                await asyncio.sleep(0.05)
                self._expire_pending(time.time())
                if self.model.status != "up" and not self._stop:
                    reason = self.att.last_error or self.model.status
                    self._deviate("attachment", "during", f"lost the node ({reason})", {"status": self.model.status})
                    self._stop = True  # kills cannot be sent, restarts not seen: whatever the setting
                    if self._wake is not None:
                        self._wake.set()
                if http is not None and http.done():
                    self._http, http = http.result(), None
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.exp.check_interval_s
                    if has_http and http is None:
                        http = asyncio.get_running_loop().create_task(http_results(self.exp.probes))
                    self._check_all("during")
        finally:
            if http is not None:
                http.cancel()

    async def _settle(self) -> None:
        deadline = time.monotonic() + self.exp.settle_s
        while time.monotonic() < deadline:  # polling the model, which has no event to wait on
            self._http = await http_results(self.exp.probes)
            if self._check_all("after", record=False):
                break
            await asyncio.sleep(0.1)
        self._check_all("after")

    async def _drain_pending(self) -> None:
        while self._pending:
            self._expire_pending(time.time())
            if not self._pending:
                break
            await asyncio.sleep(0.05)

    # -- killing ------------------------------------------------------------------------------------------

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
                with self.model.locked() as g:
                    own = g.nodes[pid].get("supervisor") if pid in g else None
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
        with self.model.locked() as g:
            r = dict(g.nodes[pid]) if pid in g else None
        if r is None:
            self._skip("gone")
            return False
        if r.get("child_id") is not None:
            with self.model.locked() as g:
                path: PathKey | None = path_of(g.nodes, pid)[0]
        else:
            path = None
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

    # -- rollbacks -----------------------------------------------------------------------------------------

    async def _rollbacks(self) -> None:
        for rb in self.exp.rollbacks:
            entry: dict[str, Any] = {"name": rb.name, "func": rb.func, "time": time.time()}
            try:
                if rb.func == "wait":
                    await asyncio.sleep(float(rb.arguments.get("seconds", 1.0)))
                    entry["ok"] = True
                elif rb.func == "restart_child":
                    res = await self.att.acommand(
                        "restart_child", supervisor=rb.arguments["supervisor"], child_id=rb.arguments["child_id"]
                    )
                    entry.update(ok=True, result=res)
            except AgentError as exc:
                entry.update(ok=False, error=f"{exc.code}: {exc.message}")
            with self.journal.lock:
                self.journal.rollbacks.append(entry)

"""The experiment runner: kills through the agent, watches the stream, checks the hypothesis.

:class:`Engine` runs one :class:`~observer.chaos.experiment.Experiment`
against one :class:`~observer.attach.Attachment` (operator role): it kills
with the agent's ``kill`` command and learns what happened from the events
the attachment feeds into its model (``exit``, ``restart``, ``gave_up``).

Its parts
    :class:`~observer.chaos.campaign.KillCampaign` carries out kill actions
    (schedule, victims, budgets, the command), :class:`~observer.chaos.tracking.KillTracker`
    follows each kill through the event stream, :class:`~observer.chaos.cancel.CancelRunner`
    cancels tasks on an asyncio node; the engine runs the experiment around
    them: the hypothesis before, during and after the method, then the rollbacks.

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
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from agent.client import AgentError

from ..attach import Attachment
from .budget import BudgetLedger
from .campaign import AuditHook, KillCampaign
from .cancel import NOTE_NO_BUDGETS, CancelRunner, http_results, not_applicable
from .experiment import CancelSpec, Experiment
from .hypothesis import Baseline, CheckResult, PathKey, baseline, check
from .journal import Journal
from .targets import CandidatePool
from .tracking import KillTracker, _Kill

__all__ = ["AuditHook", "Engine", "ExperimentNotApplicable", "ProgressHook"]

log = logging.getLogger("observer.chaos")

ProgressHook = Callable[[str, dict[str, Any]], None]
"""``hook(kind, data)``: ``kill`` (a kill record, once resolved), ``check``, ``deviation``, ``phase``, ``end``."""
DEFAULT_RECOVERY_MS = 5000.0
"""How long a kill is followed when the hypothesis has no ``recovery_ms`` probe."""


class ExperimentNotApplicable(RuntimeError):
    """The experiment asks for what the node's kind does not have (kills or budgets on an asyncio
    node, cancels on an actors node): refused before anything is done."""


class Engine(KillCampaign, KillTracker, CancelRunner):
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

"""Chaos against asyncio nodes: cancelling tasks, and probing an HTTP URL.

An asyncio node (``node_kind`` ``asyncio`` in the handshake) has tasks, not
supervised processes: the asyncio kill is the agent's ``cancel`` command
(``task.cancel(msg)``), and nothing restarts a cancelled task. So a
``cancel`` action (:class:`~observer.chaos.experiment.CancelSpec`) draws
random tasks matching its name and coroutine patterns and cancels them at
its pace; restart budgets, recovery times and supervisor probes do not
apply (the journal says so in its ``notes``), and an experiment that asks
for them is refused with the reason before anything is cancelled
(:func:`not_applicable`). The steady state of a service is what it answers:
the ``http`` probe GETs a URL and expects a status within a timeout.

Threading rules
    :class:`CancelRunner` is part of the engine: it runs on the attach loop
    thread. :func:`http_get` blocks (urllib): the engine calls it through
    :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from agent import protocol as P
from agent.client import AgentError

from ..attach import Attachment
from ..model import Change, NodeModel
from .experiment import CancelSpec, Experiment, KillSpec, Probe
from .journal import Journal
from .targets import glob_matcher

__all__ = ["ASYNCIO_PROBES", "NOTE_NO_BUDGETS", "CancelRunner", "cancel_candidates", "http_get", "not_applicable"]

ASYNCIO_PROBES = ("process_count", "http")
"""The probes that mean something on an asyncio node (tasks alive, and what the service answers)."""
NOTE_NO_BUDGETS = (
    "asyncio node: restart budgets, recovery times and supervisor checks do not apply "
    "(no supervisors; nothing restarts a cancelled task)"
)
INFLIGHT = 12


def not_applicable(exp: Experiment, node_kind: str) -> str | None:
    """Why ``exp`` cannot run on a node of ``node_kind`` (None: it can)."""
    if node_kind == "asyncio":
        kills = [s.name for s in exp.method if isinstance(s, KillSpec)]
        if kills:
            return (
                f"kill action(s) {', '.join(map(repr, kills))} do not apply to an asyncio node "
                "(no processes to kill, no supervisors to restart them): use a 'cancel' action"
            )
        bad = [p.name for p in exp.probes if p.func not in ASYNCIO_PROBES]
        if bad:
            funcs = sorted({p.func for p in exp.probes if p.func not in ASYNCIO_PROBES})
            return (
                f"probe(s) {', '.join(map(repr, bad))} ({', '.join(funcs)}) do not apply to an asyncio node "
                f"(no supervisors, mailboxes or registered names): use {' or '.join(ASYNCIO_PROBES)}"
            )
        if any(r.func == "restart_child" for r in exp.rollbacks):
            return "the restart_child rollback does not apply to an asyncio node (no supervisors)"
        return None
    cancels = [s.name for s in exp.method if isinstance(s, CancelSpec)]
    if cancels:
        return (
            f"cancel action(s) {', '.join(map(repr, cancels))} apply to asyncio nodes only; "
            f"this node is {node_kind!r}: use a 'kill' action"
        )
    return None


def cancel_candidates(model: NodeModel, spec: CancelSpec, exclude: set[str]) -> list[str]:
    """Pids of the tasks ``spec`` may cancel now: ``kind`` task, under its root, matching its name
    and coroutine patterns, not protected, not already cancelled (``exclude``)."""
    names, coros, protected = glob_matcher(spec.names), glob_matcher(spec.coros), glob_matcher(spec.protected)
    with model.locked() as g:
        recs: dict[str, dict[str, Any]] = dict(g.nodes(data=True))
    scope: set[str] | None = None
    if spec.root is not None:
        kids: dict[str, list[str]] = {}
        for pid, rec in recs.items():
            if s := rec.get("supervisor"):
                kids.setdefault(s, []).append(pid)
        scope, stack = set(), [spec.root] if spec.root in recs else []
        while stack:
            p = stack.pop()
            scope.add(p)
            stack.extend(c for c in kids.get(p, ()) if c not in scope)
    out = []
    for pid, rec in recs.items():
        if rec.get("kind") != "task" or pid in exclude or (scope is not None and pid not in scope):
            continue
        name, coro = str(rec.get("name") or ""), str(rec.get("coro") or rec.get("label") or "")
        if protected is not None and (protected.match(name) or protected.match(coro)):
            continue
        if names is not None and not names.match(name):
            continue
        if coros is not None and not coros.match(coro):
            continue
        out.append(pid)
    return out


def http_get(url: str, timeout: float) -> tuple[int | None, float, str | None]:
    """GET ``url``: (status or None, milliseconds, error text). Blocking."""
    t0 = time.perf_counter()
    req = urllib.request.Request(url, headers={"User-Agent": "observer-chaos"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # the scheme is checked at parse
            resp.read(65536)
            status: int | None = resp.status
            err = None
    except urllib.error.HTTPError as exc:
        status, err = exc.code, None
        exc.close()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        status, err = None, f"{type(exc).__name__}: {reason}"[:300]
    return status, round((time.perf_counter() - t0) * 1000.0, 3), err


async def http_results(probes: tuple[Probe, ...]) -> dict[int, tuple[bool, Any, dict[str, Any]]]:
    """Every ``http`` probe checked now (concurrently): ``{index: (ok, status, evidence)}``."""
    todo = [(i, p) for i, p in enumerate(probes) if p.func == "http"]
    if not todo:
        return {}

    async def one(p: Probe) -> tuple[bool, Any, dict[str, Any]]:
        url, want = str(p.arguments["url"]), int(p.arguments.get("status", 200))
        status, ms, err = await asyncio.to_thread(http_get, url, float(p.arguments.get("timeout_s", 2.0)))
        ev: dict[str, Any] = {"url": url, "expected": want, "ms": ms}
        if err is not None:
            ev["error"] = err
        return (status == want or not p.tolerance), status, ev

    got = await asyncio.gather(*(one(p) for _, p in todo))
    return {i: r for (i, _), r in zip(todo, got, strict=True)}


class CancelRunner:
    """The engine's cancel campaigns (see the module docstring)."""

    att: Attachment
    model: NodeModel
    journal: Journal
    audit: Callable[[str, dict[str, Any]], int] | None
    id: str
    _stop: bool
    _wake: asyncio.Event | None
    _tasks: set[asyncio.Task[None]]
    _cancelled: dict[str, dict[str, Any]]

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def abort_now(self, reason: str) -> None:
        raise NotImplementedError

    def _skip(self, why: str) -> None:
        raise NotImplementedError

    async def _cancel_campaign(self, spec: CancelSpec) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(spec.seed)
        sem = asyncio.Semaphore(INFLIGHT)
        start = next_at = loop.time()
        launched = 0
        while not self._stop:
            now = loop.time()
            if spec.duration_s is not None and now - start >= spec.duration_s:
                break
            if spec.cancels is not None and launched >= spec.cancels:
                break
            if next_at > now:
                assert self._wake is not None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(next_at - now):
                        await self._wake.wait()
                continue
            pool = cancel_candidates(self.model, spec, set(self._cancelled))
            want = spec.burst_size if spec.policy == "burst" else 1
            if spec.cancels is not None:
                want = min(want, spec.cancels - launched)
            victims = rng.sample(pool, min(want, len(pool)))
            launched += want
            with self.journal.lock:
                self.journal.attempted += want
            for _ in range(want - len(victims)):
                self._skip("no_candidate")
            for pid in victims:
                await sem.acquire()
                if self._stop:
                    sem.release()
                    break
                self._start_cancel(spec, pid, sem)
            step = spec.interval_ms / 1000.0
            if spec.jitter_ms:
                step += rng.uniform(-spec.jitter_ms, spec.jitter_ms) / 1000.0
            next_at = max(next_at + max(step, 0.0), loop.time() - 1.0)  # never a backlog over 1 s

    def _start_cancel(self, spec: CancelSpec, pid: str, sem: asyncio.Semaphore) -> None:
        r = self.model.process(pid) or {}
        rec: dict[str, Any] = {
            "n": len(self.journal.kills) + 1,
            "action": spec.name,
            "command": "cancel",
            "pid": pid,
            "name": r.get("name"),
            "label": r.get("label"),
            "kind": r.get("kind"),
            "supervisor": r.get("supervisor"),
            "reason": spec.reason,
            "time": time.time(),
            "status": "pending_send",
            "ended": None,
            "end_ms": None,
        }
        self._cancelled[pid] = rec
        with self.journal.lock:
            if len(self.journal.kills) < 100_000:
                self.journal.kills.append(rec)
        task = asyncio.get_running_loop().create_task(self._send_cancel(rec, sem))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_cancel(self, rec: dict[str, Any], sem: asyncio.Semaphore) -> None:
        audit_id: int | None = None
        try:
            if self.audit is not None:
                args = {"pid": rec["pid"], "reason": rec["reason"], "experiment": self.id, "command": "cancel"}
                try:
                    audit_id = await asyncio.to_thread(self.audit, rec["pid"], args)
                except Exception as exc:
                    rec.update(status="error", error=f"audit_unavailable: {exc}")
                    self.abort_now(f"audit log unavailable: {exc}")
                    return
                if self._stop:
                    rec.update(status="error", error="aborted: aborted before the cancel was sent")
                    if self.att.store is not None:
                        self.att.store.audit_result(audit_id, {"status": "not sent: aborted"}, ok=False)
                    return
            rec["time"] = sent = time.time()
            try:
                res = await self.att.acommand("cancel", pid=rec["pid"], reason=rec["reason"], timeout=10.0)
                rec["ack_ms"] = round((time.time() - sent) * 1000.0, 3)
                if rec["status"] == "pending_send":  # (its exit may have come first)
                    rec["status"] = "cancelled" if res.get("cancelled") else "not_cancelled"
            except AgentError as exc:
                rec.update(status="error", error=f"{exc.code}: {exc.message}")
            except (TimeoutError, OSError) as exc:
                rec.update(status="error", error=f"{P.E_TIMEOUT}: {exc or type(exc).__name__}")
            finally:
                if audit_id is not None and self.att.store is not None:
                    self.att.store.audit_result(audit_id, {"status": rec["status"]}, ok=rec["status"] != "error")
            self._emit("kill", dict(rec))
        finally:
            sem.release()

    def _on_cancel_changes(self, changes: list[Change]) -> None:
        """A cancelled task's exit: how it ended (``shutdown``: it took the cancellation)."""
        for c in changes:
            if c.kind == "exit" and c.pid is not None and c.pid in self._cancelled:
                rec = self._cancelled[c.pid]
                if rec["ended"] is None:
                    rec["ended"] = (c.data or {}).get("reason_kind") or "exit"
                    rec["end_ms"] = round((time.time() - rec["time"]) * 1000.0, 3)

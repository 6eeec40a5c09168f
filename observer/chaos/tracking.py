"""Following kills through the event stream: restarts, give-ups, lost children, budgets touched.

:class:`KillTracker` is the part of :class:`~observer.chaos.engine.Engine`
that listens to the attachment's changes (``restart``, ``gave_up``, ``exit``,
``reset``) and resolves each pending kill: recovered (its own ``restart``
event, a group restart naming its child id, or -- when its supervisor went
with a group restart higher up -- a fresh start at the same child-id path),
gave up, or lost (then its supervisor is asked with ``inspect`` whether it
dropped a temporary child).

Threading rules
    Everything here runs on the attach loop thread.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from agent.client import AgentError

from ..attach import Attachment
from ..model import Change, NodeModel
from .budget import BudgetLedger
from .experiment import Experiment
from .hypothesis import PathKey, child_paths
from .journal import Journal
from .targets import CandidatePool

__all__ = ["KillTracker"]


class _Kill:
    __slots__ = ("rec", "sent", "deadline", "units")

    def __init__(self, rec: dict[str, Any], sent: float, deadline: float, units: dict[str, int]) -> None:
        self.rec = rec
        self.sent = sent
        self.deadline = deadline
        self.units = units


class KillTracker:
    """Kill bookkeeping shared with the engine (see the module docstring)."""

    att: Attachment
    model: NodeModel
    exp: Experiment
    journal: Journal
    ledger: BudgetLedger
    _pending: dict[str, _Kill]
    _recent_by_sup: dict[str, deque[_Kill]]
    _down: set[str]
    _gone_ok: set[PathKey]
    _slow: list[dict[str, Any]]
    _tasks: set[asyncio.Task[None]]
    _pool: CandidatePool | None
    _recovery_limit: float | None
    _track_ms: float

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def _deviate(self, probe: str, phase: str, message: str, evidence: dict[str, Any]) -> None:
        raise NotImplementedError

    # -- events (loop thread, from the attachment) -------------------------------------------------------

    def _on_changes(self, changes: list[Change]) -> None:
        for c in changes:
            if c.kind == "reset":
                self._on_reset()
            elif c.kind == "restart":
                self._on_restart(c)
            elif c.kind == "gave_up":
                self._on_gave_up(c)
            elif c.kind == "exit" and c.pid is not None:
                k = self._pending.get(c.pid)
                if k is not None:
                    k.rec["exit_reason"] = (c.data or {}).get("reason")
                    k.rec["exited"] = True
        if self._pool is not None:
            self._pool.on_changes(changes, self._down)

    def _on_restart(self, c: Change) -> None:
        d = c.data or {}
        sup = str(d.get("supervisor"))
        old, new = d.get("old_pid"), d.get("new_pid")
        t = float(d.get("time") or time.time())
        if old is not None:
            self._down.discard(old)
            mine = self.ledger.restarted(sup, old, t)
            if not mine and sup in self.journal.budgets:
                self._budget_note(sup, foreign=True)
        k = self._pending.pop(old, None) if old is not None else self._group_restarted(sup, d.get("child_id"), t)
        if k is not None:
            self.ledger.spend(k.rec["pid"], t)
            rec = k.rec
            rec["status"] = "recovered"
            rec["new_pid"] = new
            rec["recovery_ms"] = round(max(0.0, t - k.sent) * 1000.0, 3)
            rec["restarted"].append({"child_id": d.get("child_id"), "new_pid": new})
            if self._recovery_limit is not None and rec["recovery_ms"] > self._recovery_limit:
                self._slow.append(rec)
                self._deviate(
                    "recovery_ms",
                    "during",
                    f"{rec['pid']} ({rec.get('name') or rec.get('label')}) came back after {rec['recovery_ms']} ms",
                    {"kill": dict(rec)},
                )
            self._emit("kill", dict(rec))
            return
        if old is None:  # a sibling restarted by one_for_all / rest_for_one: credit the latest kill
            for k2 in reversed(self._recent_by_sup.get(sup, ())):
                if k2.sent <= t + 0.001:
                    k2.rec["restarted"].append({"child_id": d.get("child_id"), "new_pid": new})
                    break

    def _group_restarted(self, sup: str, cid: Any, t: float) -> _Kill | None:
        """A child restarted with its group (one_for_all, rest_for_one: ``old_pid`` null) answers
        a pending kill of that very child: the supervisor had shut it down for the group already,
        so no restart will name it."""
        if cid is None:
            return None
        for pid, k in self._pending.items():
            if k.rec.get("supervisor") == sup and k.rec.get("child_id") == cid and k.sent <= t:
                k.rec["note"] = "restarted with its group"
                return self._pending.pop(pid)
        return None

    def _on_gave_up(self, c: Change) -> None:
        d = dict(c.data or {})
        sup = str(d.get("supervisor"))
        with self.journal.lock:
            self.journal.gave_up.append(d)
            b = self.journal.budgets.get(sup)
            if b is not None:
                b["gave_up"] = True
        for pid, k in list(self._pending.items()):
            if k.rec.get("supervisor") == sup:
                k.rec["status"] = "gave_up"
                self._pending.pop(pid, None)
                self._emit("kill", dict(k.rec))
        recent = [dict(k.rec) for k in self._recent_by_sup.get(sup, ())][-10:]
        if any(p.func == "supervisors_gave_up" for p in self.exp.probes):
            tol = next(p.tolerance for p in self.exp.probes if p.func == "supervisors_gave_up")
            if len(self.journal.gave_up) > tol:
                self._deviate(
                    "supervisors_gave_up",
                    "during",
                    f"supervisor {sup} gave up ({d.get('restarts')} restarts > intensity {d.get('intensity')} "
                    f"in {d.get('period')} s)",
                    {"gave_up": d, "recent_kills": recent},
                )

    def _on_reset(self) -> None:
        """A snapshot replaced the picture, and the batch lost the changes before it: replay the
        restarts the model still remembers, then pending kills whose child is back are recovered
        (time unknown)."""
        for ev in self.model.recent_events(limit=1000, kinds=("restart",)):
            if ev.get("old_pid") in self._pending:
                data = {k: ev.get(k) for k in ("supervisor", "child_id", "old_pid", "new_pid", "restarts", "time")}
                self._on_restart(Change("restart", ev.get("new_pid"), data))
        paths = child_paths(self.model)
        for pid, k in list(self._pending.items()):
            path = k.rec.get("path")
            new = paths.get(tuple(path)) if path else None
            if new is not None and new != pid:
                self._pending.pop(pid, None)
                self._down.discard(pid)
                self.ledger.spend(pid, time.time())
                k.rec.update(status="recovered", new_pid=new, note="restart seen in a resync snapshot")
                self._emit("kill", dict(k.rec))

    def _expire_pending(self, now: float) -> None:
        paths: dict[PathKey, str] | None = None
        for pid, k in list(self._pending.items()):
            if now < k.deadline:
                continue
            self._pending.pop(pid, None)
            self._down.discard(pid)
            rec = k.rec
            if rec["status"] != "pending":
                continue
            if rec.get("path"):
                # its supervisor may have gone with a group restart higher up: then the child
                # was started afresh by the new supervisor (no restart event names it)
                paths = paths if paths is not None else child_paths(self.model)
                new = paths.get(tuple(rec["path"]))
                if new is not None and new != pid:
                    self._recovered_afresh(k, new)
                    continue
            rec["status"] = "not_restarted"
            self.ledger.spend(pid, k.sent)  # still spent, as of the kill
            task = asyncio.get_running_loop().create_task(self._explain_lost(k))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _recovered_afresh(self, k: _Kill, new: str) -> None:
        rec = k.rec
        started = (self.model.process(new) or {}).get("started_at")
        self.ledger.spend(rec["pid"], float(started or time.time()))
        rec.update(status="recovered", new_pid=new, note="started afresh by a restarted supervisor")
        if isinstance(started, int | float):
            rec["recovery_ms"] = round(max(0.0, started - k.sent) * 1000.0, 3)
            if self._recovery_limit is not None and rec["recovery_ms"] > self._recovery_limit:
                self._slow.append(rec)
                msg = f"{rec['pid']} came back after {rec['recovery_ms']} ms"
                self._deviate("recovery_ms", "during", msg, {"kill": dict(rec)})
        self._emit("kill", dict(rec))

    async def _explain_lost(self, k: _Kill) -> None:
        """A killed child did not come back in time: a temporary child (dropped by its
        supervisor) is no deviation; anything else is, with the supervisor's view as evidence."""
        rec = k.rec
        sup = rec.get("supervisor")
        children: list[dict[str, Any]] | None = None
        if sup:
            try:
                info = await self.att.acommand("inspect", pid=sup, mailbox_limit=0, timeout=5.0)
                children = [c for c in (info.get("children") or []) if isinstance(c, dict)]
            except AgentError as exc:
                rec["inspect_error"] = exc.code
        cid = rec.get("child_id")
        listed = children is not None and cid is not None and any(c.get("id") == cid for c in children)
        if children is not None and cid is not None and not listed:
            rec["status"] = "not_restarted_temporary"
            if rec.get("path"):
                self._gone_ok.add(tuple(rec["path"]))
            self._emit("kill", dict(rec))
            return
        self._slow.append(rec)
        if self._recovery_limit is not None:
            self._deviate(
                "recovery_ms",
                "during",
                f"{rec['pid']} ({rec.get('name') or rec.get('label')}) not restarted within {self._track_ms:g} ms",
                {"kill": dict(rec), "supervisor_children": (children or [])[:50]},
            )
        self._emit("kill", dict(rec))

    # -- budgets ---------------------------------------------------------------------------------------------

    def _budget_note(self, sup: str, *, foreign: bool = False, kill: bool = False, used: int | None = None) -> None:
        with self.journal.lock:
            b = self.journal.budgets.get(sup)
            if b is None:
                info = self.ledger.info(sup) or {}
                b = self.journal.budgets[sup] = {
                    "name": info.get("name"),
                    "strategy": info.get("strategy"),
                    "intensity": info.get("intensity"),
                    "period": info.get("period"),
                    "kills": 0,
                    "other_restarts": 0,
                    "peak_used": 0,
                    "gave_up": False,
                }
            if foreign:
                b["other_restarts"] += 1
            if kill:
                b["kills"] += 1
            if used is not None:
                b["peak_used"] = max(b["peak_used"], used)

"""The within-budget ledger: restarts each supervisor has spent, as the experiment knows them.

Per supervisor, the ledger holds the times of restarts it saw in the stream
(of any cause) and the kills the experiment made whose restart has not been
seen yet (*held*: they count until they resolve). A kill is allowed when, for
every supervisor it would cost a restart (by the model's
:meth:`~observer.model.NodeModel.kill_preview`: strategy groups, links and
escalation included), ``used + cost <= intensity - margin``. Seen restarts
expire ``period`` (plus a little) after the restart event's time -- no sooner
than the runtime's own window, which starts earlier.

Threading rules
    Used only on the attach loop thread by the engine; reads the thread-safe model.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from ..model import NodeModel

__all__ = ["BudgetLedger"]

EXPIRY_SLACK_S = 0.05


class BudgetLedger:
    def __init__(self, model: NodeModel) -> None:
        self.model = model
        self._spent: dict[str, deque[float]] = {}
        self._held: dict[str, dict[str, int]] = {}
        self._held_by_pid: dict[str, list[tuple[str, str]]] = {}
        """``(supervisor, key)`` of every entry a kill of the pid holds: spent or released at once."""

    def info(self, sup: str) -> dict[str, Any] | None:
        """The supervisor's budget as the stream last reported it, with its name (None: unknown)."""
        with self.model.view() as v:
            rec = v.record(sup) if sup in v else None
            b = rec.get("budget") if rec is not None else None
            name = (rec.get("name") or rec.get("label")) if rec is not None else None
        return {**b, "name": name} if isinstance(b, dict) else None

    def _seed(self, sup: str) -> None:
        """First contact with a supervisor: start from the model's estimate of its budget use."""
        if sup in self._spent:
            return
        proc = self.model.process(sup) or {}
        used = int((proc.get("budget_now") or {}).get("used") or 0)
        self._spent[sup] = deque([time.time()] * used)

    def used(self, sup: str, now: float, period: float) -> int:
        q = self._spent.get(sup)
        if q is not None:
            while q and now - q[0] > period + EXPIRY_SLACK_S:
                q.popleft()
        return (len(q) if q else 0) + sum(self._held.get(sup, {}).values())

    @staticmethod
    def plan(model: NodeModel, pid: str, reason: str) -> tuple[dict[str, int], list[str], bool] | None:
        """Restarts a kill would cost per supervisor, the pids that go down, whether the target
        dies (None: not in the picture)."""
        pv = model.kill_preview(pid, reason)
        if not pv.get("exists"):
            return None
        units: dict[str, int] = {}
        for r in pv.get("restarts") or ():
            units[r["supervisor"]] = units.get(r["supervisor"], 0) + 1
        for g in pv.get("gives_up") or ():
            units[g["supervisor"]] = units.get(g["supervisor"], 0) + 1
        dies = bool(pv.get("target_dies"))
        own = pv.get("supervisor")
        if dies and own and reason != "normal":
            # the preview can miss it (a supervisor the stream has not described as one yet, say,
            # looks like a process that dies with its child): its own supervisor always pays
            units[own] = max(units.get(own, 0), 1)
        return units, list(pv.get("down") or ()), dies

    def check(self, units: dict[str, int], margin: int) -> tuple[str | None, dict[str, int]]:
        """Why the cost does not fit (``would_exceed_budget``, ``budget_unknown``; None: it fits),
        and each supervisor's use after it."""
        now = time.time()
        used_after: dict[str, int] = {}
        why: str | None = None
        for sup, n in units.items():
            self._seed(sup)
            b = self.info(sup)
            if b is None:
                why = why or "budget_unknown"  # a supervisor whose budget we cannot see: do not risk it
                continue
            used = self.used(sup, now, float(b.get("period") or 5.0))
            used_after[sup] = used + n
            if used + n > int(b.get("intensity") or 0) - margin:
                why = "would_exceed_budget"
        return why, used_after

    def full(self, sup: str, margin: int) -> bool:
        """True when ``sup`` cannot pay one more restart (a cheap test before a kill preview)."""
        b = self.info(sup)
        if b is None or sup not in self._spent:
            return False  # unknown here: the full check decides
        return self.used(sup, time.time(), float(b.get("period") or 5.0)) + 1 > int(b.get("intensity") or 0) - margin

    def hold(self, pid: str, own_sup: str | None, units: dict[str, int]) -> None:
        """A kill of ``pid`` was sent: its cost counts until its restart is seen."""
        for sup, n in units.items():
            # keyed by the pid whose restart spends it (the target, for its own supervisor)
            key = pid if sup == own_sup else f"{pid}@{sup}"
            self._held.setdefault(sup, {})[key] = n
            self._held_by_pid.setdefault(pid, []).append((sup, key))

    def restarted(self, sup: str, old: str, t: float) -> bool:
        """A restart of ``old`` by ``sup`` at ``t``; True if one of our kills explains it."""
        mine = self._held.get(sup, {}).pop(old, None)
        if sup not in self._spent:
            # first news of this supervisor: the model's estimate (which already counts this
            # restart, and the ones before the experiment) is where its ledger starts
            self._seed(sup)
            if mine is None:
                return False
        self._spent[sup].extend([t] * (mine or 1))
        return mine is not None

    def spend(self, pid: str, t: float) -> None:
        """The kill of ``pid`` is over: what it still holds becomes spent at ``t``."""
        for sup, key in self._held_by_pid.pop(pid, ()):
            n = self._held.get(sup, {}).pop(key, None)
            if n:
                self._spent.setdefault(sup, deque()).extend([t] * n)

    def release(self, pid: str) -> None:
        """The kill of ``pid`` was never carried out: it costs nothing."""
        for sup, key in self._held_by_pid.pop(pid, ()):
            self._held.get(sup, {}).pop(key, None)

"""The journal of an experiment, and where journals are kept (a JSON file, the SQLite history).

A journal (``Journal.to_dict()``) is one JSON object::

    {"id", "node", "title", "experiment": {...the experiment, file-shaped...},
     "status": "running" | "completed" | "deviated" | "aborted" | "failed",
     "hypothesis_held": bool | null, "started", "ended", "aborted_at", "abort_reason", "error",
     "kills": [{"n", "pid", "name", "label", "kind", "supervisor", "child_id", "action", "reason",
                "time", "status", "new_pid", "recovery_ms", "ack_ms" (the command's round trip),
                "restarted": [...], "error"}],
     "skipped": {"would_exceed_budget": n, "budget_unknown": n, "no_candidate": n, "gone": n,
                 "late": n},
     "checks": [{"probe", "func", "phase", "ok", "value", "tolerance", "time", "evidence"}],
     "deviations": [{"probe", "phase", "time", "message", "evidence"}],
     "budgets": {sup_pid: {"name", "strategy", "intensity", "period", "kills", "peak_used", "gave_up"}},
     "gave_up": [...gave_up events...],
     "summary": {"attempted", "carried_out", "recovered", "recovery_ms": {"p50","p90","p99","max","mean"}}}

``status`` follows Chaos Toolkit's words where they exist: ``completed``
(the hypothesis held), ``deviated`` (it did not), ``aborted`` (stopped by an
operator), ``failed`` (the experiment could not run, e.g. the hypothesis did
not hold before anything was killed).

Threading rules
    A :class:`Journal` is written by the engine on the attach loop thread;
    :meth:`Journal.to_dict` takes a snapshot under its lock, from any thread.
    :class:`ChaosHistory` goes through the history's database layer
    (:class:`observer.db.Database`): usable from any thread.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..db import Database
from ..db import chaos as chaos_db

__all__ = ["ChaosHistory", "Journal", "percentiles", "save_json"]

KILLS_KEPT = 100_000
"""Kills kept in a journal (the counts and percentiles cover them all)."""


def percentiles(xs: Sequence[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99, max and mean (None for no samples), rounded to 0.001."""
    if not xs:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    s = sorted(xs)

    def pct(p: float) -> float:
        rank = max(1, math.ceil(p / 100 * len(s)))
        return round(s[min(rank, len(s)) - 1], 3)

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": round(s[-1], 3), "mean": round(sum(s) / len(s), 3)}


class Journal:
    """What happened in one experiment (see the module docstring for the shape)."""

    def __init__(self, exp_id: str, node: str, experiment: dict[str, Any], started: float) -> None:
        self.lock = threading.Lock()
        self.id = exp_id
        self.node = node
        self.experiment = experiment
        self.status = "running"
        self.hypothesis_held: bool | None = None
        self.started = started
        self.ended: float | None = None
        self.aborted_at: float | None = None
        self.abort_reason: str | None = None
        self.error: str | None = None
        self.kills: list[dict[str, Any]] = []
        self.attempted = 0
        self.skipped: dict[str, int] = {
            "would_exceed_budget": 0,
            "budget_unknown": 0,
            "no_candidate": 0,
            "gone": 0,
            "late": 0,
        }
        self.checks: list[dict[str, Any]] = []
        self.deviations: list[dict[str, Any]] = []
        self.budgets: dict[str, dict[str, Any]] = {}
        self.gave_up: list[dict[str, Any]] = []
        self.rollbacks: list[dict[str, Any]] = []
        self.action: str | None = None
        self.notes: list[str] = []
        """What the reader should know about this run (e.g. an asyncio node: no budgets)."""

    def recoveries(self) -> list[float]:
        return [k["recovery_ms"] for k in self.kills if k.get("recovery_ms") is not None]

    def summary(self) -> dict[str, Any]:
        carried = sum(1 for k in self.kills if k["status"] not in ("error", "pending_send"))
        return {
            "attempted": self.attempted,
            "carried_out": carried,
            "recovered": sum(1 for k in self.kills if k["status"] == "recovered"),
            "not_restarted": sum(1 for k in self.kills if k["status"] in ("not_restarted", "gave_up")),
            "errors": sum(1 for k in self.kills if k["status"] == "error"),
            "skipped": dict(self.skipped),
            "give_ups": len(self.gave_up),
            "deviations": len(self.deviations),
            "recovery_ms": percentiles(self.recoveries()),
        }

    def to_dict(self, *, kills_limit: int | None = None) -> dict[str, Any]:
        with self.lock:
            kills = self.kills if kills_limit is None else self.kills[-kills_limit:]
            return {
                "id": self.id,
                "node": self.node,
                "title": self.experiment.get("title"),
                "experiment": self.experiment,
                "status": self.status,
                "hypothesis_held": self.hypothesis_held,
                "started": self.started,
                "ended": self.ended,
                "aborted_at": self.aborted_at,
                "abort_reason": self.abort_reason,
                "error": self.error,
                "action": self.action,
                "kills": [dict(k) for k in kills],
                "skipped": dict(self.skipped),
                "checks": list(self.checks),
                "deviations": list(self.deviations),
                "budgets": {k: dict(v) for k, v in self.budgets.items()},
                "gave_up": list(self.gave_up),
                "rollbacks": list(self.rollbacks),
                "notes": list(self.notes),
                "summary": self.summary(),
            }


def save_json(journal: dict[str, Any], path: str | Path) -> None:
    """Write a journal to ``path`` (UTF-8 JSON, via a temporary file so a reader never sees half)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:  # 0600
        f.write(json.dumps(journal, indent=1, default=str))
    tmp.replace(p)


class ChaosHistory:
    """Journals in the observer's history database (table ``chaos_experiments``,
    queried through :mod:`observer.db.chaos`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, journal: dict[str, Any]) -> None:
        """Insert or replace one journal (blocks until committed; raises
        :class:`observer.db.StoreError` if it cannot be)."""
        chaos_db.save(self.db, journal)

    def list(self, *, node: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Past experiments, newest first, without their kills and checks."""
        return chaos_db.list_experiments(self.db, node=node, limit=limit)

    def get(self, exp_id: str) -> dict[str, Any] | None:
        return chaos_db.get(self.db, exp_id)

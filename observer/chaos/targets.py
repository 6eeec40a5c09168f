"""Choosing victims: the processes a kill spec may target, read from the model.

Supervisors are spared unless ``kinds`` includes ``supervisor``; unsupervised
processes always (nothing would restart them); processes whose name or label
matches ``protected`` (by default the agent's and observer's own machinery,
``agent*``, ``observer*``) too. A ``sequence`` names its victims explicitly
and bypasses all of this (but not the budget check).

:func:`candidates` scans the whole picture (a few ms per 10,000 processes).
:class:`CandidatePool` scans once, then follows the model's changes (a
spawn, a restart or an update is looked at alone, an exit or a kill leaves
the pool), so that drawing a victim costs the same at 10 kills/s and 1,000.

Threading rules
    :func:`candidates` is a pure function of the thread-safe model. A pool is
    used on one thread (the engine's: the attach loop), which is also where
    the model's change listeners are called.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..model import Change, NodeModel
from .experiment import KillSpec
from .hypothesis import resolve

__all__ = ["CandidatePool", "candidates", "glob_matcher"]


def glob_matcher(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching any of the glob ``patterns`` (None: no patterns, no filter)."""
    pats = list(patterns)
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats)) if pats else None


class _Rules:
    """A kill spec's victim rules, with its glob patterns compiled once."""

    def __init__(self, spec: KillSpec) -> None:
        self.spec = spec
        self.kinds = frozenset(spec.kinds)
        self.spare_supervisors = "supervisor" not in spec.kinds
        self.protected = glob_matcher(spec.protected)
        self.names = glob_matcher(spec.names)
        self.labels = glob_matcher(spec.labels)

    def allows(self, rec: Mapping[str, Any]) -> bool:
        """Whether a supervised process of this record may be killed (scope and supervisors aside)."""
        if rec.get("supervisor") is None or rec.get("kind") not in self.kinds:
            return False
        name, label = rec.get("name") or "", rec.get("label") or ""
        if self.protected is not None and (self.protected.match(name) or self.protected.match(label)):
            return False
        if self.names is not None and not self.names.match(name):
            return False
        return self.labels is None or bool(self.labels.match(label))


def _scope(model: NodeModel, spec: KillSpec, recs: Mapping[str, Mapping[str, Any]]) -> set[str] | None:
    """``spec.root`` and the pids under it (None: no root, everything)."""
    if spec.root is None:
        return None
    root = resolve(model, spec.root)
    if root is None:
        return set()
    kids: dict[str, list[str]] = {}
    for pid, rec in recs.items():
        s = rec.get("supervisor")
        if s:
            kids.setdefault(s, []).append(pid)
    scope: set[str] = set()
    stack = [root]
    while stack:
        p = stack.pop()
        for c in kids.get(p, ()):
            if c not in scope:
                scope.add(c)
                stack.append(c)
    scope.add(root)
    return scope


def _scan(model: NodeModel, rules: _Rules, exclude: set[str]) -> tuple[list[str], set[str] | None]:
    with model.view() as v:
        recs: dict[str, Mapping[str, Any]] = dict(v.items())
    scope = _scope(model, rules.spec, recs)
    # a process that supervises others is a supervisor, even before the stream says so (a fresh
    # supervisor's spawn event can come before its kind is known)
    supervisors = {s for r in recs.values() if (s := r.get("supervisor"))}
    out = []
    for pid, rec in recs.items():
        if scope is not None and (pid not in scope or rec.get("supervisor") not in scope):
            continue  # outside the subtree, or its root (whose supervisor is outside)
        if pid in exclude or (rules.spare_supervisors and pid in supervisors):
            continue
        if rules.allows(rec):
            out.append(pid)
    return out, scope


def candidates(model: NodeModel, spec: KillSpec, exclude: set[str]) -> list[str]:
    """Pids ``spec`` may kill now: in its subtree, of its kinds, supervised, matching its name and
    label patterns, not protected and not in ``exclude`` (already down)."""
    return _scan(model, _Rules(spec), exclude)[0]


class CandidatePool:
    """The candidates of one kill spec, kept up to date from the model's changes.

    :meth:`refresh` scans the whole picture (at the start, and after a
    ``reset``: a snapshot replaced it); :meth:`on_changes` then adds a pid
    that is spawned, restarted or updated when it qualifies and drops one that
    exits or turns out to supervise others; :meth:`discard` drops a victim
    (it is down until its restart). :meth:`sample` draws distinct pids.
    """

    def __init__(self, model: NodeModel, spec: KillSpec) -> None:
        self.model = model
        self.rules = _Rules(spec)
        self._pids: list[str] = []
        self._index: dict[str, int] = {}
        self._scope: set[str] | None = None
        self.stale = True
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self._pids)

    def __contains__(self, pid: object) -> bool:
        return pid in self._index

    def refresh(self, exclude: set[str]) -> None:
        """Scan the whole picture again (``exclude``: pids down, not to be drawn)."""
        pids, self._scope = _scan(self.model, self.rules, exclude)
        self._pids = pids
        self._index = {p: i for i, p in enumerate(pids)}
        self.stale = False
        self.refreshes += 1

    def sample(self, rng: random.Random, k: int) -> list[str]:
        """Up to ``k`` distinct pids drawn at random."""
        n = len(self._pids)
        if n <= k:
            out = list(self._pids)
            rng.shuffle(out)
            return out
        return [self._pids[i] for i in rng.sample(range(n), k)]

    def add(self, pid: str) -> None:
        if pid not in self._index:
            self._index[pid] = len(self._pids)
            self._pids.append(pid)

    def discard(self, pid: str) -> None:
        i = self._index.pop(pid, None)
        if i is None:
            return
        last = self._pids.pop()
        if last != pid:
            self._pids[i] = last
            self._index[last] = i

    def consider(self, pid: str) -> None:
        """Look at one pid again: in the pool if it qualifies now, out if not."""
        spare = self.rules.spare_supervisors
        with self.model.view() as v:
            rec = v.record(pid) if pid in v else None
            sup = rec.get("supervisor") if rec is not None else None
            supervises = rec is not None and v.has_children(pid)
            if sup and spare and sup in self._index:
                self.discard(sup)  # it supervises others: a supervisor, whatever the stream said
        if rec is None:
            self.discard(pid)
            return
        if self._scope is not None and sup in self._scope:
            self._scope.add(pid)  # a restarted supervisor's children stay in scope
        ok = (
            (self._scope is None or (pid in self._scope and sup in self._scope))
            and not (spare and (supervises or rec.get("kind") == "supervisor"))
            and self.rules.allows(rec)
        )
        if ok:
            self.add(pid)
        else:
            self.discard(pid)

    def on_changes(self, changes: Iterable[Change], down: set[str]) -> None:
        """Follow the model's changes (``down``: pids killed whose restart is not seen yet)."""
        for c in changes:
            if c.kind == "reset":
                self.stale = True
            elif c.pid is None or self.stale:
                continue
            elif c.kind == "exit":
                self.discard(c.pid)
            elif c.kind in ("spawn", "restart", "update") and c.pid not in down:
                self.consider(c.pid)

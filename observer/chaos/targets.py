"""Choosing victims: the processes a kill spec may target, read from the model.

Supervisors are spared unless ``kinds`` includes ``supervisor``; unsupervised
processes always (nothing would restart them); processes whose name or label
matches ``protected`` (by default the agent's and observer's own machinery,
``agent*``, ``observer*``) too. A ``sequence`` names its victims explicitly
and bypasses all of this (but not the budget check).

Threading rules
    A pure function of the thread-safe model.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from ..model import NodeModel
from .experiment import KillSpec
from .hypothesis import resolve

__all__ = ["candidates"]


def candidates(model: NodeModel, spec: KillSpec, exclude: set[str]) -> list[str]:
    """Pids ``spec`` may kill now: in its subtree, of its kinds, supervised, matching its name and
    label patterns, not protected and not in ``exclude`` (already down)."""
    with model.locked() as g:
        recs: dict[str, dict[str, Any]] = dict(g.nodes(data=True))
    scope: set[str] | None = None
    if spec.root is not None:
        root = resolve(model, spec.root)
        if root is None:
            return []
        kids: dict[str, list[str]] = {}
        for pid, rec in recs.items():
            s = rec.get("supervisor")
            if s:
                kids.setdefault(s, []).append(pid)
        scope = set()
        stack = [root]
        while stack:
            p = stack.pop()
            for c in kids.get(p, ()):
                if c not in scope:
                    scope.add(c)
                    stack.append(c)
    # a process that supervises others is a supervisor, even before the stream says so (a fresh
    # supervisor's spawn event can come before its kind is known)
    supervisors = {s for r in recs.values() if (s := r.get("supervisor"))}
    out = []
    for pid, rec in recs.items():
        if scope is not None and pid not in scope:
            continue
        if pid in exclude or rec.get("supervisor") is None or rec.get("kind") not in spec.kinds:
            continue
        if pid in supervisors and "supervisor" not in spec.kinds:
            continue
        name, label = rec.get("name") or "", rec.get("label") or ""
        if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(label, p) for p in spec.protected):
            continue
        if spec.names and not any(fnmatch.fnmatchcase(name, p) for p in spec.names):
            continue
        if spec.labels and not any(fnmatch.fnmatchcase(label, p) for p in spec.labels):
            continue
        out.append(pid)
    return out

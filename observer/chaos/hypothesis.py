"""Steady-state checks read from the observer's model of the node.

Each :class:`~observer.chaos.experiment.Probe` is checked ``before`` the
method, continuously ``during`` it (those that make sense while processes are
down) and ``after`` it (once the tree had ``settle_s`` to heal):

==================== ================================= ================================================
func                 tolerance                         holds when
==================== ================================= ================================================
``recovery_ms``      max milliseconds                  every killed child was restarted within it
                                                       (checked per kill by the engine, from events)
``supervisors_gave_up`` max count (usually 0)          no more supervisors gave up than that
``mailbox``          max messages                      the named process's mailbox is at most that
``process_count``    count or ``"N%"``                 the node's process count is back within that
                                                       of its level before the method (after only)
``children_restored`` true                             every supervised child (by its child-id path
                                                       from the root) present before is back (after)
``alive``            true                              every listed registered name is alive
==================== ================================= ================================================

Threading rules
    Pure functions of a :class:`~observer.model.NodeModel` (thread-safe); no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import GraphView, NodeModel
from .experiment import Probe

__all__ = ["Baseline", "CheckResult", "baseline", "check", "child_paths", "path_of", "resolve"]

PathKey = tuple[str, ...]


@dataclass
class Baseline:
    """The steady state measured before the method."""

    time: float
    process_count: int
    children: set[PathKey]
    """Child-id paths of every supervised static child."""
    names: dict[str, str]


@dataclass
class CheckResult:
    """One check of one probe."""

    probe: str
    func: str
    phase: str
    """``before``, ``during`` or ``after``."""
    ok: bool
    value: Any
    tolerance: Any
    time: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "probe": self.probe,
            "func": self.func,
            "phase": self.phase,
            "ok": self.ok,
            "value": self.value,
            "tolerance": self.tolerance,
            "time": self.time,
            "evidence": self.evidence,
        }


def resolve(model: NodeModel, target: str) -> str | None:
    """A pid in the picture for a pid text or a registered name (None: not there)."""
    if target.startswith("<"):
        return target if target in model else None
    pid = model.names().get(target)
    return pid if pid is not None and pid in model else None


def child_paths(model: NodeModel, root: str | None = None) -> dict[PathKey, str]:
    """``{child-id path: pid}`` of every static supervised child (under ``root`` if given).

    A path is the chain of child ids from the top supervisor (named by its
    registered name, or ``"*"``) down to the child: stable across restarts,
    unlike pids. Dynamic (``simple_one_for_one``) children have no child id
    and are left out."""
    with model.view() as v:
        recs: dict[str, Mapping[str, Any]] = dict(v.items())
    out: dict[PathKey, str] = {}
    for pid, rec in recs.items():
        if rec.get("supervisor") is None or rec.get("child_id") is None:
            continue
        path, chain = path_of(recs, pid)
        if root is None or root in chain:
            out[path] = pid
    return out


def path_of(recs: Mapping[str, Mapping[str, Any]], pid: str) -> tuple[PathKey, list[str]]:
    """The child-id path of ``pid`` and the pids along it (``pid`` first). ``recs``: records by
    pid (for one path, :func:`path_in` reads the model's view without a copy)."""
    path: list[str] = []
    chain: list[str] = []
    cur: str | None = pid
    while cur is not None and cur in recs and cur not in chain:
        chain.append(cur)
        r = recs[cur]
        sup = r.get("supervisor")
        if sup is None or sup not in recs:
            path.append(str(r.get("name") or "*"))
            break
        path.append(str(r.get("child_id")))
        cur = sup
    return tuple(reversed(path)), chain


def path_in(view: GraphView, pid: str) -> PathKey:
    """:func:`path_of`'s path, read from the model's view (under its lock: no copy for one path)."""
    chain = view.path(pid)
    if not chain:
        return ()
    top = str(view.record(chain[0]).get("name") or "*")
    return (top, *(str(view.record(p).get("child_id")) for p in chain[1:]))


def baseline(model: NodeModel, now: float) -> Baseline:
    return Baseline(now, len(model), set(child_paths(model)), model.names())


def _count_ok(value: int, base: int, tol: Any) -> bool:
    allowed = base * float(tol[:-1]) / 100.0 if isinstance(tol, str) else float(tol)
    return abs(value - base) <= allowed


def check(
    probe: Probe,
    model: NodeModel,
    phase: str,
    now: float,
    *,
    base: Baseline | None,
    gave_up: list[dict[str, Any]],
    slow_or_lost: list[dict[str, Any]],
    gone_ok: set[PathKey],
) -> CheckResult | None:
    """Check ``probe`` in ``phase``; None when it is not checked in that phase.

    ``gave_up`` are the give-ups seen since the experiment began;
    ``slow_or_lost`` the kills whose child came back late or not at all;
    ``gone_ok`` the child paths a supervisor dropped on purpose (temporary)."""
    f = probe.func
    tol = probe.tolerance

    def res(ok: bool, value: Any, **evidence: Any) -> CheckResult:
        return CheckResult(probe.name, f, phase, ok, value, tol, now, evidence)

    if f == "recovery_ms":
        if phase == "before":
            return None
        return res(not slow_or_lost, len(slow_or_lost), kills=slow_or_lost[:20])
    if f == "supervisors_gave_up":
        return res(len(gave_up) <= tol, len(gave_up), gave_up=gave_up[:20])
    if f == "mailbox":
        name = str(probe.arguments["name"])
        pid = resolve(model, name)
        if pid is None:
            if phase == "during":
                return None  # being restarted, maybe: the after check decides
            return res(False, None, missing=name)
        proc = model.process(pid) or {}
        n = int(proc.get("mailbox") or 0)
        return res(n <= tol, n, pid=pid, name=name)
    if f == "process_count":
        if phase != "after" or base is None:
            return None
        n = len(model)
        return res(_count_ok(n, base.process_count, tol), n, baseline=base.process_count)
    if f == "children_restored":
        if phase != "after" or base is None:
            return None
        now_paths = set(child_paths(model))
        missing = sorted("/".join(p) for p in base.children - now_paths - gone_ok)
        return res(not missing or not tol, len(missing), missing=missing[:50])
    if f == "alive":
        if phase == "during":
            return None
        names = [str(n) for n in probe.arguments["names"]]
        missing = [n for n in names if resolve(model, n) is None]
        return res(not missing or not tol, len(names) - len(missing), missing=missing)
    return None

"""The shapes of an experiment: kill and cancel actions, probes, rollbacks, and their limits.

Plain frozen data, built by :mod:`observer.chaos.experiment` (which reads
files and checks every field) and run by :mod:`observer.chaos.engine`.

Threading rules
    Plain frozen data: share freely.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "CANCEL_POLICIES",
    "DEFAULT_PROTECTED",
    "KILL_ONLY",
    "MAX_KILLS",
    "MODES",
    "POLICIES",
    "PROBES",
    "ROLLBACKS",
    "CancelSpec",
    "Experiment",
    "ExperimentError",
    "KillSpec",
    "Probe",
    "Rollback",
]

MODES = ("within_budget", "unbounded")
"""``within_budget``: never make a supervisor exceed its restart intensity; ``unbounded``: find where it breaks."""
POLICIES = ("interval", "burst", "sequence")
"""``interval``: one random victim every ``interval_ms`` (+- ``jitter_ms``); ``burst``: ``burst_size``
victims at once every ``interval_ms``; ``sequence``: the listed targets, in order, ``interval_ms`` apart."""
PROBES = ("recovery_ms", "supervisors_gave_up", "mailbox", "process_count", "children_restored", "alive", "http")
"""Steady-state checks (see :mod:`observer.chaos.hypothesis`)."""
ROLLBACKS = ("restart_child", "wait")
DEFAULT_PROTECTED = ("agent*", "observer*")
"""Name/label patterns never killed unless targeted by name (the agent's and observer's own machinery)."""
MAX_KILLS = 1_000_000
CANCEL_POLICIES = ("interval", "burst")
"""Policies of a ``cancel`` action (asyncio nodes): as for kills; no ``sequence`` (tasks come and go)."""
KILL_ONLY = {
    "kinds": "tasks are the only victims of a cancel",
    "sequence": "tasks come and go: give names or coros patterns",
    "mode": "an asyncio node has no supervisors, so no restart budgets",
    "budget_margin": "an asyncio node has no supervisors, so no restart budgets",
    "kills": "a cancel action counts 'cancels'",
    "labels": "a task's label is its coroutine: use 'coros'",
}
"""Fields of a ``kill`` action refused in a ``cancel`` action, with why."""


class ExperimentError(ValueError):
    """An experiment file or option is malformed (the message names the field)."""


@dataclass(frozen=True, slots=True)
class KillSpec:
    """One kill campaign (a ``kill`` action of the method)."""

    name: str = "kill"
    """The action's name (journal)."""
    root: str | None = None
    """Pid or registered name of the subtree to attack (None: the whole node)."""
    names: tuple[str, ...] = ()
    """Registered-name glob patterns (any matches; empty: no name filter)."""
    labels: tuple[str, ...] = ()
    """Label (process type) glob patterns (any matches; empty: no label filter)."""
    kinds: tuple[str, ...] = ("worker", "gen_server")
    """Process kinds that may be killed; add ``supervisor`` to kill supervisors on purpose."""
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    """Name/label glob patterns never killed (unless listed in ``sequence``)."""
    policy: str = "interval"
    interval_ms: float = 1000.0
    jitter_ms: float = 0.0
    burst_size: int = 1
    sequence: tuple[str, ...] = ()
    """Targets (pids or names) of the ``sequence`` policy: explicitly targeted, so never spared."""
    reason: str = "kill"
    """Exit reason sent with each kill (``kill`` cannot be trapped)."""
    duration_s: float | None = None
    kills: int | None = None
    """Stop after this many kill attempts (or ``duration_s``, whichever first); within budget,
    attempts that would exceed a budget are skipped and counted, not carried out."""
    mode: str = "within_budget"
    budget_margin: int = 1
    """Restarts of headroom left in every budget (within_budget) for crashes the experiment does not
    cause; 0 pushes supervisors to their very limit (Erlang chaos_monkey's ``almost_kill``), which is
    safe only when nothing else crashes meanwhile."""
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class CancelSpec:
    """One cancel campaign (a ``cancel`` action: an asyncio node's tasks, through the agent's
    ``cancel`` command). No budgets: nothing restarts a cancelled task."""

    name: str = "cancel"
    root: str | None = None
    """Pid of the subtree (a task, TaskGroup or gather) to attack (None: the whole loop)."""
    names: tuple[str, ...] = ()
    """Task-name glob patterns (any matches; empty: no name filter)."""
    coros: tuple[str, ...] = ()
    """Coroutine glob patterns (the qualified name, e.g. ``Service.job``; any matches)."""
    protected: tuple[str, ...] = DEFAULT_PROTECTED
    """Name/coroutine glob patterns never cancelled."""
    policy: str = "interval"
    interval_ms: float = 1000.0
    jitter_ms: float = 0.0
    burst_size: int = 1
    reason: str = "cancelled by a chaos experiment"
    """The cancel message (``task.cancel(msg)``)."""
    duration_s: float | None = None
    cancels: int | None = None
    """Stop after this many cancel attempts (or ``duration_s``, whichever first)."""
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """A steady-state check; ``tolerance`` is its bound (see :mod:`observer.chaos.hypothesis`)."""

    func: str
    tolerance: Any
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rollback:
    """An action run after the method, whatever happened."""

    func: str
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Experiment:
    """A whole experiment."""

    title: str
    description: str = ""
    hypothesis_title: str = "steady state"
    probes: tuple[Probe, ...] = ()
    method: tuple[KillSpec | CancelSpec, ...] = ()
    rollbacks: tuple[Rollback, ...] = ()
    abort_on_deviation: bool = True
    """Stop killing at the first deviation of the hypothesis."""
    settle_s: float = 10.0
    """After the method: how long the tree gets to return to its steady state."""
    check_interval_s: float = 0.5
    """How often the continuous checks (mailbox, give-ups) run during the method."""

    def to_dict(self) -> dict[str, Any]:
        """Back to the file's shape (what the journal stores)."""
        return {
            "title": self.title,
            "description": self.description,
            "abort-on-deviation": self.abort_on_deviation,
            "settle_s": self.settle_s,
            "steady-state-hypothesis": {
                "title": self.hypothesis_title,
                "probes": [
                    {
                        "type": "probe",
                        "name": p.name,
                        "tolerance": p.tolerance,
                        "provider": {"type": "observer", "func": p.func, "arguments": p.arguments},
                    }
                    for p in self.probes
                ],
            },
            "method": [
                _action(k.name, "cancel" if isinstance(k, CancelSpec) else "kill", _kill_args(k)) for k in self.method
            ],
            "rollbacks": [_action(r.name, r.func, r.arguments) for r in self.rollbacks],
        }


def _action(name: str, func: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "action", "name": name, "provider": {"type": "observer", "func": func, "arguments": args}}


def _kill_args(k: KillSpec | CancelSpec) -> dict[str, Any]:
    d = asdict(k)
    d.pop("name")
    return {key: list(v) if isinstance(v, tuple) else v for key, v in d.items() if v is not None}

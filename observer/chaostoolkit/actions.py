"""Chaos Toolkit actions: kill processes of a node through its agent (``type: python`` providers).

::

    {"type": "action", "name": "kill-random-workers",
     "provider": {"type": "python", "module": "observer.chaostoolkit.actions", "func": "kill_random",
                  "arguments": {"count": 50, "interval_ms": 20, "root": "payments_sup"}}}

Both actions run an :mod:`observer.chaos` experiment (within budget unless
told otherwise) and return its summary: kills attempted and carried out,
recovery percentiles, give-ups, plus the kills themselves. An action that
could not kill (no such process, refused) raises, which Chaos Toolkit
records as a failed activity. See :mod:`observer.chaostoolkit._connect` for
the configuration.

Threading rules
    Blocking calls for chaostoolkit's thread; each attaches for its own length.
"""

from __future__ import annotations

from typing import Any

from ..chaos.experiment import Experiment, Probe, kill_spec
from ..chaos.journal import save_json
from ..chaos.runner import run
from ._connect import connect

__all__ = ["kill_process", "kill_random"]


def _result(j: dict[str, Any], journal_path: str | None) -> dict[str, Any]:
    if journal_path:
        save_json(j, journal_path)
    s = j["summary"]
    return {
        "experiment": j["id"],
        "status": j["status"],
        "hypothesis_held": j["hypothesis_held"],
        "attempted": s["attempted"],
        "carried_out": s["carried_out"],
        "skipped": s["skipped"],
        "recovered": s["recovered"],
        "give_ups": s["give_ups"],
        "recovery_ms": s["recovery_ms"],
        "deviations": [d["message"] for d in j["deviations"]],
        "kills": [
            {k: x.get(k) for k in ("pid", "name", "label", "status", "new_pid", "recovery_ms", "error")}
            for x in j["kills"][:200]
        ],
    }


def _experiment(title: str, args: dict[str, Any], recovery_ms: float, settle_s: float) -> Experiment:
    return Experiment(
        title=title,
        probes=(
            Probe("recovery_ms", recovery_ms, "killed children back in time"),
            Probe("supervisors_gave_up", 0, "no supervisor gave up"),
        ),
        method=(kill_spec(args, where="arguments"),),
        abort_on_deviation=False,
        settle_s=settle_s,
    )


def kill_process(
    target: str,
    reason: str = "kill",
    mode: str = "unbounded",
    recovery_ms: float = 5000.0,
    journal_path: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Kill one process (a pid or registered name; supervisors too: it is named explicitly)
    and wait for its restart. ``mode="within_budget"`` refuses a kill that would make a
    supervisor give up."""
    args = {"policy": "sequence", "sequence": [target], "reason": reason, "mode": mode}
    exp = _experiment(f"kill {target}", args, recovery_ms, 0.0)
    with connect(configuration, secrets) as (mgr, att):
        _, j = run(mgr, att, exp)
    out = _result(j, journal_path)
    if j["error"]:
        raise RuntimeError(j["error"])
    kills = j["kills"]
    if not kills:
        why = "it would exceed a restart budget" if j["skipped"]["would_exceed_budget"] else "no such process"
        raise RuntimeError(f"did not kill {target}: {why}")
    if kills[0]["status"] == "error":
        raise RuntimeError(f"could not kill {target}: {kills[0].get('error')}")
    return out


def kill_random(
    count: int = 10,
    interval_ms: float = 100.0,
    jitter_ms: float = 0.0,
    root: str | None = None,
    names: list[str] | None = None,
    labels: list[str] | None = None,
    protected: list[str] | None = None,
    reason: str = "kill",
    mode: str = "within_budget",
    budget_margin: int = 0,
    seed: int | None = None,
    recovery_ms: float = 5000.0,
    settle_s: float = 5.0,
    journal_path: str | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make ``count`` kill attempts, one random victim every ``interval_ms`` (workers and
    gen_servers, never supervisors or ``protected`` names/labels), within budget by default."""
    args: dict[str, Any] = {
        "kills": count,
        "interval_ms": interval_ms,
        "jitter_ms": jitter_ms,
        "reason": reason,
        "mode": mode,
        "budget_margin": budget_margin,
    }
    for k, v in (("root", root), ("names", names), ("labels", labels), ("protected", protected), ("seed", seed)):
        if v is not None:
            args[k] = v
    exp = _experiment(f"kill {count} at random", args, recovery_ms, settle_s)
    with connect(configuration, secrets) as (mgr, att):
        _, j = run(mgr, att, exp)
    if j["error"]:
        raise RuntimeError(j["error"])
    return _result(j, journal_path)

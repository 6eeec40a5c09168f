"""Experiments: what to kill, how, and what must hold meanwhile; read from JSON or YAML.

The file reads like a Chaos Toolkit experiment (``title``, ``description``,
``steady-state-hypothesis`` with ``probes`` and their ``tolerance``,
``method``, ``rollbacks``), with providers of ``type: observer``::

    title: payments survive a kill every 100 ms
    steady-state-hypothesis:
      title: the tree heals
      probes:
        - {type: probe, name: back within 2 s, tolerance: 2000,
           provider: {type: observer, func: recovery_ms}}
        - {type: probe, name: nobody gave up, tolerance: 0,
           provider: {type: observer, func: supervisors_gave_up}}
    method:
      - type: action
        name: kill payments workers
        provider:
          type: observer
          func: kill
          arguments: {root: payments_sup, policy: interval, interval_ms: 100, kills: 50}
    rollbacks: []

The shapes themselves are in :mod:`observer.chaos.spec` (re-exported here).
Every ``kill`` action of the method is one :class:`KillSpec`; probes are
:class:`Probe` (their ``func`` is one of :data:`PROBES`); rollbacks are
:class:`Rollback` (``restart_child`` or ``wait``). :func:`parse` checks
everything and raises :class:`ExperimentError` with the path of the bad field.

Threading rules
    Plain frozen data: share freely.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .spec import (
    CANCEL_POLICIES,
    DEFAULT_PROTECTED,
    KILL_ONLY,
    MAX_KILLS,
    MODES,
    POLICIES,
    PROBES,
    ROLLBACKS,
    CancelSpec,
    Experiment,
    ExperimentError,
    KillSpec,
    Probe,
    Rollback,
)

__all__ = [
    "CANCEL_POLICIES",
    "DEFAULT_PROTECTED",
    "MODES",
    "POLICIES",
    "PROBES",
    "CancelSpec",
    "Experiment",
    "ExperimentError",
    "KillSpec",
    "Probe",
    "Rollback",
    "cancel_spec",
    "http_probe",
    "kill_spec",
    "load",
    "parse",
]


def load(path: str | Path) -> Experiment:
    """Read an experiment from a ``.json``, ``.yaml`` or ``.yml`` file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentError(f"cannot read {p}: {exc.strerror or exc}") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ExperimentError(f"{p}: not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExperimentError(f"{p}: not valid JSON: {exc}") from None
    return parse(data)


def parse(data: Any) -> Experiment:
    """Check and convert an experiment (a dict shaped as in the module docstring)."""
    if not isinstance(data, dict):
        raise ExperimentError("an experiment must be an object")
    title = _s(data, "title", "", required=True)
    ssh = data.get("steady-state-hypothesis", data.get("steady_state_hypothesis")) or {}
    if not isinstance(ssh, dict):
        raise ExperimentError("steady-state-hypothesis must be an object")
    raw_probes = ssh.get("probes") or []
    if not isinstance(raw_probes, list):
        raise ExperimentError("steady-state-hypothesis.probes must be a list")
    probes = tuple(_probe(p, f"steady-state-hypothesis.probes[{i}]") for i, p in enumerate(raw_probes))
    raw_method = data.get("method") or []
    if not isinstance(raw_method, list) or not raw_method:
        raise ExperimentError("method must be a non-empty list of kill (or cancel) actions")
    method = tuple(_kill_action(a, f"method[{i}]") for i, a in enumerate(raw_method))
    raw_rb = data.get("rollbacks") or []
    if not isinstance(raw_rb, list):
        raise ExperimentError("rollbacks must be a list")
    rollbacks = tuple(_rollback(r, f"rollbacks[{i}]") for i, r in enumerate(raw_rb))
    abort = data.get("abort-on-deviation", data.get("abort_on_deviation", True))
    if not isinstance(abort, bool):
        raise ExperimentError("abort-on-deviation must be true or false")
    return Experiment(
        title=title,
        description=_s(data, "description", "", max_len=4000),
        hypothesis_title=_s(ssh, "title", "steady state"),
        probes=probes,
        method=method,
        rollbacks=rollbacks,
        abort_on_deviation=abort,
        settle_s=_num(data, "settle_s", 10.0, "", lo=0.0, hi=3600.0),
        check_interval_s=_num(data, "check_interval_s", 0.5, "", lo=0.01, hi=60.0),
    )


def _provider(obj: Any, where: str, kind: str) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ExperimentError(f"{where} must be an object")
    if obj.get("type", kind) != kind:
        raise ExperimentError(f"{where}.type must be {kind!r}")
    name = _s(obj, "name", "", where=where)
    prov = obj.get("provider")
    if not isinstance(prov, dict):
        raise ExperimentError(f"{where}.provider must be an object")
    if prov.get("type", "observer") != "observer":
        raise ExperimentError(
            f"{where}.provider.type must be 'observer' (run chaostoolkit's own providers with `chaos run`)"
        )
    func = prov.get("func")
    if not isinstance(func, str):
        raise ExperimentError(f"{where}.provider.func is required")
    args = prov.get("arguments") or {}
    if not isinstance(args, dict):
        raise ExperimentError(f"{where}.provider.arguments must be an object")
    return name, func, args


def _probe(obj: Any, where: str) -> Probe:
    name, func, args = _provider(obj, where, "probe")
    if func not in PROBES:
        raise ExperimentError(f"{where}.provider.func must be one of {', '.join(PROBES)}, not {func!r}")
    if "tolerance" not in obj:
        raise ExperimentError(f"{where}.tolerance is required")
    tol = obj["tolerance"]
    if func in ("recovery_ms", "supervisors_gave_up", "mailbox"):
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not math.isfinite(tol) or tol < 0:
            raise ExperimentError(f"{where}.tolerance must be a number >= 0")
    elif func == "process_count":
        ok = (isinstance(tol, int | float) and not isinstance(tol, bool) and tol >= 0) or (
            isinstance(tol, str) and tol.endswith("%") and _pct(tol) is not None
        )
        if not ok:
            raise ExperimentError(f"{where}.tolerance must be a count (>= 0) or a percentage like '5%'")
    elif not isinstance(tol, bool):
        raise ExperimentError(f"{where}.tolerance must be true or false")
    if func == "mailbox" and not isinstance(args.get("name"), str):
        raise ExperimentError(f"{where}.provider.arguments.name (a registered name) is required")
    if func == "http":
        _http_args(args, where)
    if func == "alive":
        names = args.get("names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ExperimentError(f"{where}.provider.arguments.names must be a list of registered names")
    return Probe(func=func, tolerance=tol, name=name or func, arguments=dict(args))


def _http_args(args: dict[str, Any], where: str) -> None:
    unknown = sorted(set(args) - {"url", "status", "timeout_s"})
    if unknown:
        raise ExperimentError(f"{where}.provider.arguments: unknown field(s) of an http probe: {', '.join(unknown)}")
    url = args.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2000:
        raise ExperimentError(f"{where}.provider.arguments.url must be an http:// or https:// URL")
    status = args.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ExperimentError(f"{where}.provider.arguments.status must be an HTTP status (100-599)")
    _num(args, "timeout_s", 2.0, f"{where}.provider.arguments", lo=0.01, hi=60.0)


def http_probe(url: str, *, status: int = 200, timeout_s: float = 2.0, name: str = "") -> Probe:
    """An ``http`` probe (checked like one read from a file)."""
    args: dict[str, Any] = {"url": url, "status": status, "timeout_s": timeout_s}
    _http_args(args, "http probe")
    return Probe(func="http", tolerance=True, name=name or f"GET {url}", arguments=args)


def _pct(s: str) -> float | None:
    try:
        v = float(s[:-1])
    except ValueError:
        return None
    return v if 0 <= v <= 100 else None


def _rollback(obj: Any, where: str) -> Rollback:
    name, func, args = _provider(obj, where, "action")
    if func not in ROLLBACKS:
        raise ExperimentError(f"{where}.provider.func must be one of {', '.join(ROLLBACKS)}")
    if func == "restart_child" and not (isinstance(args.get("supervisor"), str) and "child_id" in args):
        raise ExperimentError(f"{where}: restart_child needs arguments supervisor and child_id")
    if func == "wait":
        _num(args, "seconds", 1.0, where, lo=0.0, hi=600.0)
    return Rollback(func=func, name=name or func, arguments=dict(args))


def _kill_action(obj: Any, where: str) -> KillSpec | CancelSpec:
    name, func, args = _provider(obj, where, "action")
    if func == "cancel":
        return cancel_spec(args, where=f"{where}.provider.arguments", name=name or "cancel")
    if func != "kill":
        raise ExperimentError(f"{where}.provider.func must be 'kill' (or 'cancel', for an asyncio node)")
    return kill_spec(args, where=f"{where}.provider.arguments", name=name or "kill")


def cancel_spec(args: dict[str, Any], *, where: str = "", name: str = "cancel") -> CancelSpec:
    """A :class:`CancelSpec` from a dict of its fields; a kill-only field is refused with why."""
    for key, why in KILL_ONLY.items():
        if key in args:
            raise ExperimentError(f"{_at(where)}{key} does not apply to a cancel action ({why})")
    unknown = sorted(set(args) - set(CancelSpec.__slots__))
    if unknown:
        raise ExperimentError(f"{_at(where)}unknown field(s): {', '.join(unknown)}")
    policy = args.get("policy", "interval")
    if policy not in CANCEL_POLICIES:
        raise ExperimentError(f"{_at(where)}policy of a cancel action must be one of {', '.join(CANCEL_POLICIES)}")
    cancels = args.get("cancels")
    if cancels is not None and (
        isinstance(cancels, bool) or not isinstance(cancels, int) or not 1 <= cancels <= MAX_KILLS
    ):
        raise ExperimentError(f"{_at(where)}cancels must be an integer between 1 and {MAX_KILLS}")
    duration = args.get("duration_s")
    if duration is not None:
        duration = _num(args, "duration_s", 0.0, where, lo=0.001, hi=86400.0)
    if cancels is None and duration is None:
        raise ExperimentError(f"{_at(where)}give cancels or duration_s (or both)")
    reason = args.get("reason", "cancelled by a chaos experiment")
    if not isinstance(reason, str) or not 1 <= len(reason) <= 200:
        raise ExperimentError(f"{_at(where)}reason must be a string of 1-200 characters")
    root = args.get("root")
    if root is not None and (not isinstance(root, str) or not 1 <= len(root) <= 200):
        raise ExperimentError(f"{_at(where)}root must be a pid")
    seed = args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ExperimentError(f"{_at(where)}seed must be an integer")
    burst = args.get("burst_size", 1)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10000:
        raise ExperimentError(f"{_at(where)}burst_size must be an integer between 1 and 10000")
    protected = args.get("protected")
    return CancelSpec(
        name=name,
        root=root,
        names=_strs(args, "names", where),
        coros=_strs(args, "coros", where),
        protected=DEFAULT_PROTECTED if protected is None else _strs(args, "protected", where),
        policy=policy,
        interval_ms=_num(args, "interval_ms", 1000.0, where, lo=0.1, hi=3_600_000.0),
        jitter_ms=_num(args, "jitter_ms", 0.0, where, lo=0.0, hi=3_600_000.0),
        burst_size=burst,
        reason=reason,
        duration_s=duration,
        cancels=cancels,
        seed=seed,
    )


def kill_spec(args: dict[str, Any], *, where: str = "", name: str = "kill") -> KillSpec:
    """A :class:`KillSpec` from a dict of its fields (file arguments, CLI options, web form)."""
    known = set(KillSpec.__slots__)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ExperimentError(f"{_at(where)}unknown field(s): {', '.join(unknown)}")
    policy = args.get("policy", "interval")
    if policy not in POLICIES:
        raise ExperimentError(f"{_at(where)}policy must be one of {', '.join(POLICIES)}")
    mode = args.get("mode", "within_budget")
    if mode not in MODES:
        raise ExperimentError(f"{_at(where)}mode must be one of {', '.join(MODES)}")
    sequence = _strs(args, "sequence", where)
    if policy == "sequence" and not sequence:
        raise ExperimentError(f"{_at(where)}the sequence policy needs a non-empty 'sequence'")
    kills = args.get("kills")
    if kills is not None and (isinstance(kills, bool) or not isinstance(kills, int) or not 1 <= kills <= MAX_KILLS):
        raise ExperimentError(f"{_at(where)}kills must be an integer between 1 and {MAX_KILLS}")
    duration = args.get("duration_s")
    if duration is not None:
        duration = _num(args, "duration_s", 0.0, where, lo=0.001, hi=86400.0)
    if kills is None and duration is None and policy != "sequence":
        raise ExperimentError(f"{_at(where)}give kills or duration_s (or both)")
    kinds = _strs(args, "kinds", where) or ("worker", "gen_server")
    for k in kinds:
        if k not in ("worker", "gen_server", "supervisor"):
            raise ExperimentError(f"{_at(where)}kinds: {k!r} is not worker, gen_server or supervisor")
    reason = args.get("reason", "kill")
    if not isinstance(reason, str) or not 1 <= len(reason) <= 200:
        raise ExperimentError(f"{_at(where)}reason must be a string of 1-200 characters")
    root = args.get("root")
    if root is not None and (not isinstance(root, str) or not 1 <= len(root) <= 200):
        raise ExperimentError(f"{_at(where)}root must be a pid or a registered name")
    seed = args.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ExperimentError(f"{_at(where)}seed must be an integer")
    margin = args.get("budget_margin", 1)
    if isinstance(margin, bool) or not isinstance(margin, int) or not 0 <= margin <= 1000:
        raise ExperimentError(f"{_at(where)}budget_margin must be an integer between 0 and 1000")
    burst = args.get("burst_size", 1)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10000:
        raise ExperimentError(f"{_at(where)}burst_size must be an integer between 1 and 10000")
    protected = args.get("protected")
    return KillSpec(
        name=name,
        root=root,
        names=_strs(args, "names", where),
        labels=_strs(args, "labels", where),
        kinds=kinds,
        protected=DEFAULT_PROTECTED if protected is None else _strs(args, "protected", where),
        policy=policy,
        interval_ms=_num(args, "interval_ms", 1000.0, where, lo=0.1, hi=3_600_000.0),
        jitter_ms=_num(args, "jitter_ms", 0.0, where, lo=0.0, hi=3_600_000.0),
        burst_size=burst,
        sequence=sequence,
        reason=reason,
        duration_s=duration,
        kills=kills,
        mode=mode,
        budget_margin=margin,
        seed=seed,
    )


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _s(
    d: dict[str, Any], key: str, default: str, *, required: bool = False, where: str = "", max_len: int = 200
) -> str:
    v = d.get(key)
    if v is None:
        if required:
            raise ExperimentError(f"{_at(where)}{key} is required")
        return default
    if not isinstance(v, str) or len(v) > max_len:
        raise ExperimentError(f"{_at(where)}{key} must be a string of at most {max_len} characters")
    return v


def _num(d: dict[str, Any], key: str, default: float, where: str, *, lo: float, hi: float) -> float:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise ExperimentError(f"{_at(where)}{key} must be a number between {lo:g} and {hi:g}")
    return float(v)


def _strs(d: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    v = d.get(key)
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and 0 < len(x) <= 200 for x in v):
        raise ExperimentError(f"{_at(where)}{key} must be a list of strings")
    if len(v) > 10000:
        raise ExperimentError(f"{_at(where)}{key} is too long")
    return tuple(v)

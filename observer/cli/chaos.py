"""``observer chaos``: run a chaos experiment against an agent, from a terminal or CI.

    observer chaos --attach HOST:PORT [--node-token-file F] [--experiment FILE | options] [--journal OUT.json]

Exit status: 0 the steady-state hypothesis held; 1 it did not (or did not
hold before the method: nothing was killed); 2 usage error (bad option or
experiment file); 3 the experiment could not run (cannot attach, not an
operator token). The node token comes from ``--node-token-file`` or
``OBSERVER_NODE_TOKEN(_FILE)``, never from the command line.

Durations carry their unit in the option's name, as in the experiment file:
``--interval-ms``, ``--jitter-ms``, ``--recovery-ms``; ``--duration-s``,
``--settle-s``.

Threading rules
    The command runs in the main thread; the experiment on the attach loop
    thread of its own manager (:mod:`observer.chaos.runner`).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import click
from click.core import ParameterSource

from ..attach import parse_address
from ..chaos.experiment import (
    DEFAULT_PROTECTED,
    CancelSpec,
    Experiment,
    ExperimentError,
    Probe,
    cancel_spec,
    http_probe,
    kill_spec,
    load,
)
from ..chaos.journal import save_json
from ..chaos.runner import attached, run
from . import helpers as h

__all__ = ["chaos", "experiment_from_options", "summary_lines"]

EXIT_HELD, EXIT_DEVIATED, EXIT_USAGE, EXIT_CANNOT_RUN = 0, 1, 2, 3


def experiment_from_options(opts: dict[str, Any]) -> Experiment:
    """An experiment from the command's options (raises :class:`ExperimentError`)."""
    if opts.get("cancels") is not None or opts.get("coro"):
        return _cancel_experiment(opts)
    args: dict[str, Any] = {
        "policy": opts["policy"],
        "reason": opts["reason"],
        "mode": opts["mode"],
        "budget_margin": opts["budget_margin"],
        "burst_size": opts["burst"],
        "jitter_ms": opts["jitter_ms"],
    }
    if opts["rate"] is not None:
        if opts["rate"] <= 0:
            raise ExperimentError("--rate must be > 0")
        args["interval_ms"] = 1000.0 / opts["rate"]
    else:
        args["interval_ms"] = opts["interval_ms"]
    for key, opt in (("root", "root"), ("kills", "kills"), ("duration_s", "duration_s"), ("seed", "seed")):
        if opts[opt] is not None:
            args[key] = opts[opt]
    for key, opt in (("names", "name"), ("labels", "label"), ("kinds", "kind"), ("sequence", "target")):
        if opts[opt]:
            args[key] = list(opts[opt])
    if opts["protect"]:
        args["protected"] = [*DEFAULT_PROTECTED, *opts["protect"]]
    if opts["target"] and not opts.get("_policy_given"):
        args["policy"] = "sequence"
    spec = kill_spec(args, where="options")
    probes = [
        Probe("recovery_ms", opts["recovery_ms"], "killed children back in time"),
        Probe("supervisors_gave_up", opts["max_give_ups"], "no supervisor gave up"),
        Probe("children_restored", True, "every supervised child is back"),
    ]
    tol = opts["process_tolerance"]
    if tol is not None:
        if tol.endswith("%"):
            probes.append(Probe("process_count", tol, "process count back to its level"))
        else:
            try:
                probes.append(Probe("process_count", int(tol), "process count back to its level"))
            except ValueError:
                raise ExperimentError("--process-tolerance must be a count or a percentage like 5%") from None
    for item in opts["mailbox"]:
        name, sep, n = item.rpartition("=")
        if not sep or not name or not n.isdigit():
            raise ExperimentError(f"--mailbox must be NAME=MAX, not {item!r}")
        probes.append(Probe("mailbox", int(n), f"mailbox of {name} at most {n}", {"name": name}))
    if opts["alive"]:
        probes.append(Probe("alive", True, "named processes alive", {"names": list(opts["alive"])}))
    probes += _http_probes(opts)
    title = opts["title"] or f"{spec.mode} {spec.policy} kills"
    return Experiment(
        title=title,
        probes=tuple(probes),
        method=(spec,),
        abort_on_deviation=not opts["no_abort"],
        settle_s=opts["settle_s"],
    )


KILL_OPTIONS = {
    "mode": "mode",
    "budget_margin": "budget_margin",
    "kind": "kinds",
    "target": "sequence",
    "label": "labels",
    "kills": "kills",
    "recovery_ms": None,
    "max_give_ups": None,
    "mailbox": None,
    "alive": None,
}
"""Options of kills (and supervisor probes): refused in a cancel run (--cancels/--coro), with why."""


def _http_probes(opts: dict[str, Any]) -> list[Probe]:
    return [http_probe(url) for url in opts.get("http") or ()]


def _cancel_experiment(opts: dict[str, Any]) -> Experiment:
    """``--cancels``/``--coro``: a cancel action against an asyncio node."""
    given = opts.get("_given") or set()
    for opt, field in KILL_OPTIONS.items():
        if opt in given:
            flag = "--" + opt.replace("_", "-")
            what = f"({field} of a kill)" if field else "(a supervisor probe)"
            raise ExperimentError(
                f"{flag} {what} does not apply to cancelling tasks (--cancels/--coro): "
                "an asyncio node has no supervisors, restart budgets or registered names"
            )
    args: dict[str, Any] = {"policy": opts["policy"], "burst_size": opts["burst"], "jitter_ms": opts["jitter_ms"]}
    if args["policy"] == "sequence":
        raise ExperimentError("--policy sequence does not apply to cancelling tasks: use interval or burst")
    if opts["rate"] is not None:
        if opts["rate"] <= 0:
            raise ExperimentError("--rate must be > 0")
        args["interval_ms"] = 1000.0 / opts["rate"]
    else:
        args["interval_ms"] = opts["interval_ms"]
    for key, opt in (("root", "root"), ("cancels", "cancels"), ("duration_s", "duration_s"), ("seed", "seed")):
        if opts.get(opt) is not None:
            args[key] = opts[opt]
    if "reason" in given:
        args["reason"] = opts["reason"]
    for key, opt in (("names", "name"), ("coros", "coro")):
        if opts.get(opt):
            args[key] = list(opts[opt])
    if opts["protect"]:
        args["protected"] = [*DEFAULT_PROTECTED, *opts["protect"]]
    spec = cancel_spec(args, where="options")
    probes = _http_probes(opts)
    if "process_tolerance" in given:
        tol = opts["process_tolerance"]
        try:
            probes.append(Probe("process_count", tol if tol.endswith("%") else int(tol), "tasks back to their level"))
        except ValueError:
            raise ExperimentError("--process-tolerance must be a count or a percentage like 5%") from None
    return Experiment(
        title=opts["title"] or f"{spec.policy} task cancels",
        probes=tuple(probes),
        method=(spec,),
        abort_on_deviation=not opts["no_abort"],
        settle_s=opts["settle_s"],
    )


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def summary_lines(j: dict[str, Any]) -> list[str]:
    """The summary table printed at the end of a run."""
    s = j["summary"]
    r = s["recovery_ms"]
    out = [
        f"experiment  {j['title']}  ({j['id']}, node {j['node']})",
        f"status      {j['status']}  hypothesis {'HELD' if j['hypothesis_held'] else 'NOT HELD'}",
        f"kills       attempted {s['attempted']}  carried out {s['carried_out']}  recovered {s['recovered']}  "
        f"not restarted {s['not_restarted']}  errors {s['errors']}",
        "skipped     " + "  ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["skipped"].items()),
        f"recovery ms p50 {_fmt(r['p50'])}  p90 {_fmt(r['p90'])}  p99 {_fmt(r['p99'])}  max {_fmt(r['max'])}",
        f"give-ups    {s['give_ups']}",
    ]
    if j["budgets"]:
        out.append("")
        out.append(
            f"{'supervisor':<24} {'strategy':<20} {'peak used':>9} {'intensity':>9} {'period s':>8} {'kills':>6}"
        )
        for pid, b in sorted(j["budgets"].items(), key=lambda kv: -int(kv[1].get("kills") or 0)):
            name = f"{b.get('name') or '?'} {pid}"
            flag = "  GAVE UP" if b.get("gave_up") else ""
            out.append(
                f"{name[:24]:<24} {str(b.get('strategy'))[:20]:<20} {b.get('peak_used', 0):>9} "
                f"{_fmt(b.get('intensity')):>9} {_fmt(b.get('period')):>8} {b.get('kills', 0):>6}{flag}"
            )
    failed = [c for c in j["checks"] if not c["ok"]]
    if failed or j["deviations"]:
        out.append("")
        for d in j["deviations"][:10]:
            out.append(f"DEVIATION   [{d['phase']}] {d['message']}")
        for c in failed[:10]:
            out.append(f"FAILED      [{c['phase']}] {c['probe']}: {c['value']!r} (tolerance {c['tolerance']!r})")
    if j.get("error"):
        out.append(f"error       {j['error']}")
    return out


_OPTIONS = [
    click.option("--attach", required=True, help="HOST:PORT of the agent"),
    click.option("--node-token-file", type=h.FILE, default=None, help="operator token, or OBSERVER_NODE_TOKEN(_FILE)"),
    click.option("--experiment", "experiment_file", type=click.Path(dir_okay=False), help="JSON or YAML experiment"),
    click.option("--journal", "journal_path", type=click.Path(dir_okay=False), help="write the journal (JSON) here"),
    click.option("--title", default=None),
    click.option("--root", default=None, help="pid or registered name of the subtree to attack"),
    click.option("--name", multiple=True, help="registered-name glob of victims (repeatable)"),
    click.option("--label", multiple=True, help="label (process type) glob of victims (repeatable)"),
    click.option("--kind", multiple=True, type=click.Choice(["worker", "gen_server", "supervisor"])),
    click.option("--protect", multiple=True, help="name/label glob never killed (repeatable)"),
    click.option("--target", multiple=True, help="explicit victims in order (sequence policy; repeatable)"),
    click.option(
        "--policy", type=click.Choice(["interval", "burst", "sequence"]), default="interval", show_default=True
    ),
    click.option("--interval-ms", type=float, default=1000.0, show_default=True),
    click.option("--rate", type=float, default=None, help="kills per second (instead of --interval-ms)"),
    click.option("--jitter-ms", type=float, default=0.0, show_default=True),
    click.option("--burst", type=int, default=1, show_default=True, help="victims per burst (burst policy)"),
    click.option("--reason", default="kill", show_default=True, help="exit reason"),
    click.option("--duration-s", type=float, default=None, help="seconds of killing"),
    click.option("--kills", type=int, default=None, help="kill attempts"),
    click.option(
        "--mode", type=click.Choice(["within_budget", "unbounded"]), default="within_budget", show_default=True
    ),
    click.option("--budget-margin", type=int, default=1, show_default=True, help="restarts of headroom left"),
    click.option("--seed", type=int, default=None),
    click.option("--recovery-ms", type=float, default=5000.0, show_default=True, help="max time to restart"),
    click.option("--max-give-ups", type=int, default=0, show_default=True),
    click.option("--process-tolerance", default="10%", show_default=True, help="count or N%"),
    click.option("--mailbox", multiple=True, help="NAME=MAX mailbox bound (repeatable)"),
    click.option("--alive", multiple=True, help="registered name that must be alive (repeatable)"),
    click.option("--http", multiple=True, help="URL that must answer 200 to a GET (repeatable; a probe)"),
    click.option("--cancels", type=int, default=None, help="asyncio node: cancel this many tasks (not kill)"),
    click.option("--coro", multiple=True, help="asyncio node: coroutine glob of tasks to cancel (repeatable)"),
    click.option("--no-abort", is_flag=True, help="keep killing after a deviation"),
    click.option("--settle-s", type=float, default=10.0, show_default=True, help="seconds to heal after the method"),
    click.option("--quiet", is_flag=True, help="no progress bar"),
]


def _with_options(fn: Any) -> Any:
    for opt in reversed(_OPTIONS):
        fn = opt(fn)
    return fn


@click.command(name="chaos")
@_with_options
@click.pass_context
def chaos(ctx: click.Context, **opts: Any) -> None:
    """Kill processes of a running system by an experiment and check that it heals."""
    try:
        parse_address(opts["attach"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attach") from None
    tokens = h.read_node_tokens(opts["node_token_file"])
    token = tokens.get(opts["attach"]) or tokens.get("*")
    if not token:
        raise h.no_node_token(opts["attach"])
    policy_given = ctx.get_parameter_source("policy") == ParameterSource.COMMANDLINE
    given = {k for k in opts if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    try:
        if opts["experiment_file"]:
            experiment = load(opts["experiment_file"])
        else:
            experiment = experiment_from_options(opts | {"_policy_given": policy_given, "_given": given})
    except ExperimentError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with attached(opts["attach"], token) as (mgr, att):
            offered = att.client.welcome.get("commands") or [] if att.client else []
            if "kill" not in offered and "cancel" not in offered:
                click.echo("observer chaos: the token is not an operator token (no kill or cancel command)", err=True)
                ctx.exit(EXIT_CANNOT_RUN)
            engine_box: list[Any] = []
            stop = threading.Event()

            def progress() -> None:
                _progress_bar(experiment, engine_box, stop)

            bar = None
            if not opts["quiet"]:
                bar = threading.Thread(target=progress, name="chaos-progress", daemon=True)
                bar.start()
            try:
                _engine, journal = run(mgr, att, experiment, box=engine_box)
            finally:
                stop.set()
                if bar is not None:
                    bar.join(2)
    except TimeoutError as exc:
        click.echo(f"observer chaos: {exc}", err=True)
        ctx.exit(EXIT_CANNOT_RUN)
    if opts["journal_path"]:
        save_json(journal, opts["journal_path"])
    for line in summary_lines(journal):
        click.echo(line)
    if opts["journal_path"]:
        click.echo(f"journal     {opts['journal_path']}")
    if journal["status"] == "failed" and journal["hypothesis_held"] is None:
        ctx.exit(EXIT_CANNOT_RUN)
    ctx.exit(EXIT_HELD if journal["hypothesis_held"] else EXIT_DEVIATED)


def _progress_bar(experiment: Experiment, box: list[Any], stop: threading.Event) -> None:
    counts = [s.cancels if isinstance(s, CancelSpec) else s.kills for s in experiment.method]
    by_kills = all(n is not None for n in counts)
    total = sum(n or 0 for n in counts) if by_kills else None
    seconds = sum(s.duration_s or 0 for s in experiment.method)
    length = total if total else max(1, int(seconds * 10))
    label = "killing" if total else f"killing for {seconds:g} s"
    started = time.monotonic()
    done = 0
    make: Any = click.progressbar
    pbar = make(length=length, label=label, file=sys.stderr)
    with pbar as bar:
        while not stop.wait(0.2):
            if not box:
                continue
            j = box[0].journal
            now = j.attempted if total else int((time.monotonic() - started) * 10)
            now = min(now, length)
            if now > done:
                bar.update(now - done)
                done = now

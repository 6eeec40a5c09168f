"""Turn runtime events and processes into wire dicts (on the agent's thread).

Everything here reads the runtime without changing it and never raises on
odd data: a process that vanishes mid-read is skipped by the caller.
"""

from __future__ import annotations

import math
from typing import Any

import actors
from actors import process_kind, process_status

from . import messages as M
from ._scrub import RedactionPolicy, redact_text

MAX_TRACEBACK = 16 * 1024


def pid_str(pid: actors.Pid | None) -> str | None:
    return None if pid is None else str(pid)


def child_id_str(cid: Any) -> str | None:
    if cid is None:
        return None
    if isinstance(cid, str):
        return cid[:200]
    try:
        return repr(cid)[:200]
    except Exception:
        return f"<{type(cid).__name__}>"


_ATOM_KINDS: dict[str, M.ReasonKind] = {
    "normal": "normal",
    "shutdown": "shutdown",
    "killed": "killed",
    "noproc": "noproc",
    "kill": "killed",
}


def reason_kind(reason: Any) -> M.ReasonKind:
    """``normal``, ``shutdown``, ``killed``, ``noproc``, ``exception`` or ``other``."""
    if isinstance(reason, BaseException):
        return "exception"
    if type(reason) is str and reason in _ATOM_KINDS:
        return _ATOM_KINDS[reason]
    if actors.is_normal_shutdown(reason):
        return "shutdown"
    return "other"


def format_traceback(reason: Any, policy: RedactionPolicy) -> str | None:
    """The traceback with its cause chain, redacted and capped; None if no exception."""
    if not isinstance(reason, BaseException):
        return None
    try:
        text = actors.format_exception_chain(reason)
    except Exception as exc:  # a broken __str__ on the exception, say
        text = f"<traceback unavailable: {type(exc).__name__}>"
    if len(text) > MAX_TRACEBACK:
        text = text[: MAX_TRACEBACK // 4] + "\n[... traceback truncated ...]\n" + text[-3 * MAX_TRACEBACK // 4 :]
    return redact_text(text, policy)


def budget_dict(proc: actors.Process) -> M.Budget | None:
    return _budget_json(_budget_tuple(proc))


def finite(x: Any) -> Any:
    """A number as sent: a non-finite float (a supervisor's ``period`` may be
    ``inf``) as its text, ``"inf"``, as the protocol promises for every number
    (``protocol.FAST_JSON`` would write null)."""
    return x if type(x) is not float or math.isfinite(x) else str(x)


def _budget_json(b: tuple[Any, ...] | None) -> M.Budget | None:
    return None if b is None else {"used": b[0], "intensity": finite(b[1]), "period": finite(b[2]), "strategy": b[3]}


def process_record(p: actors.Process) -> M.ProcessRecord:
    """One process as in a snapshot (:class:`messages.ProcessRecord`)."""
    links = actors.process_links(p)
    mons = actors.process_monitors(p)
    return {
        "pid": str(p.pid),
        "name": p.name,
        "label": p.label,
        "kind": process_kind(p),
        "status": process_status(p),
        "supervisor": pid_str(p.supervisor),
        "parent": pid_str(p.parent),
        "child_id": child_id_str(p.child_id),
        "restarts": p.restarts,
        "mailbox": p.mailbox_len,
        "msgs_in": p.msgs_in,
        "msgs_out": p.msgs_out,
        "handled": p.handled,
        "handler_time": round(p.handler_time, 6),
        "links": [str(x) for x in links],
        "monitors": [str(x) for x in mons],
        "trap_exit": p.trap_exit,
        "started_at": p.started_at,
        "budget": budget_dict(p),
    }


def _budget_tuple(p: actors.Process) -> tuple[Any, ...] | None:
    b = p.behaviour
    if not isinstance(b, actors.Supervisor):
        return None
    try:
        bud = b.budget()
    except Exception:
        return None
    return (bud.used, bud.intensity, bud.period, bud.strategy)


def meta_of(p: actors.Process, known: actors.Pid | None = None, known_text: str | None = None) -> tuple[Any, ...]:
    """The slowly-changing fields; a change is sent as an ``update`` event.
    Held as sent (the supervisor's pid and the child id as text): a tuple of
    strings, numbers and tuples of them, which the garbage collector stops
    tracking, where a live ``Pid`` kept every cached tuple in its scans, and
    which compares without calling ``Pid.__eq__``. ``known_text``: the text of
    the pid ``known``, if the caller has printed it (a spawn's parent is
    usually the supervisor)."""
    sup = p.supervisor
    return (
        p.name,
        p.label,
        known_text if sup is known and sup is not None else pid_str(sup),
        child_id_str(p.child_id),
        process_kind(p),
        p.restarts,
        p.trap_exit,
        _budget_tuple(p),
    )


META_FIELDS = ("name", "label", "supervisor", "child_id", "kind", "restarts", "trap_exit", "budget")


def meta_dict(meta: tuple[Any, ...]) -> M.ProcessMeta:
    name, label, sup, cid, kind, restarts, trap_exit, budget = meta
    return {
        "name": name,
        "label": label,
        "supervisor": sup,
        "child_id": cid,
        "kind": kind,
        "restarts": restarts,
        "trap_exit": trap_exit,
        "budget": _budget_json(budget),
    }


def spawn_event(ev: actors.Spawned, p: actors.Process | None) -> tuple[M.SpawnEvent, tuple[Any, ...] | None]:
    """A ``spawn`` event body, with the process's meta (:func:`meta_of`, also
    returned) if it is still alive (``p``)."""
    parent = pid_str(ev.parent)
    spawn: M.SpawnEvent = {
        "ev": "spawn",
        "pid": str(ev.pid),
        "name": ev.name,
        "label": ev.label,
        "parent": parent,
        "time": ev.time,
    }
    if p is None:
        return spawn, None
    meta = meta_of(p, ev.parent, parent)
    spawn.update(meta_dict(meta))
    return spawn, meta


def exit_event(
    ev: actors.Exited, policy: RedactionPolicy, report: M.CrashReport | M.CrashReportError | None = None
) -> M.ExitEvent:
    """An ``exit`` event body (without ``report``). Given the exit's encoded
    crash ``report``, its pid, reason and traceback texts are reused (the
    same texts, capped and redacted the same way: worked out once); without
    it, an exit that has a report gets its traceback from the drain."""
    reason = ev.reason
    if report is not None and "reason" in report and report["reason"] is not None:
        pid, text, tb = report["pid"], report["reason"], report["traceback"]
    else:
        pid, text = str(ev.pid), redact_text(actors.format_reason(reason), policy)
        tb = format_traceback(reason, policy) if ev.report is None or report is not None else None
    return {
        "ev": "exit",
        "pid": pid,
        "name": ev.name,
        "label": ev.label,
        "reason": text,
        "reason_kind": reason_kind(reason),
        "exception": type(reason).__name__ if isinstance(reason, BaseException) else None,
        "traceback": tb,
        "time": ev.time,
    }


def event_dict(ev: Any, node: actors.Node, policy: RedactionPolicy, encode_value: Any) -> M.Event | None:
    """A runtime event as a wire event body (:data:`messages.EVENTS`; ``t`` and
    ``seq`` are added when it is published); None for unknown types. The
    agent's own events (``loop_blocked``, ...) come in built and pass as they are."""
    t = type(ev)
    if t is actors.Spawned:
        return spawn_event(ev, actors.find_process(node, ev.pid))[0]
    if t is actors.Exited:
        return exit_event(ev, policy)
    if t is actors.Restarted:
        restart: M.RestartEvent = {
            "ev": "restart",
            "supervisor": str(ev.supervisor),
            "child_id": child_id_str(ev.child_id),
            "old_pid": pid_str(ev.old_pid),
            "new_pid": pid_str(ev.new_pid),
            "restarts": ev.restarts,
            "time": ev.time,
        }
        return restart
    if t is actors.Linked:
        link: M.LinkEvent = {"ev": "link", "a": str(ev.a), "b": str(ev.b), "time": ev.time}
        return link
    if t is actors.Unlinked:
        unlink: M.UnlinkEvent = {"ev": "unlink", "a": str(ev.a), "b": str(ev.b), "time": ev.time}
        return unlink
    if t is actors.Monitored:
        mon: M.MonitorEvent = {
            "ev": "monitor",
            "watcher": pid_str(ev.watcher),
            "target": str(ev.target),
            "ref": repr(ev.ref),
            "time": ev.time,
        }
        return mon
    if t is actors.Demonitored:
        demon: M.DemonitorEvent = {
            "ev": "demonitor",
            "watcher": pid_str(ev.watcher),
            "target": str(ev.target),
            "ref": repr(ev.ref),
            "time": ev.time,
        }
        return demon
    if t is actors.Registered:
        reg: M.RegisterEvent = {"ev": "register", "name": ev.name, "pid": pid_str(ev.pid), "time": ev.time}
        return reg
    if t is actors.Suspended:
        sus: M.SuspendEvent = {"ev": "suspend", "pid": str(ev.pid), "time": ev.time}
        return sus
    if t is actors.Resumed:
        res: M.ResumeEvent = {"ev": "resume", "pid": str(ev.pid), "time": ev.time}
        return res
    if t is actors.SupervisorGaveUp:
        gave_up: M.GaveUpEvent = {
            "ev": "gave_up",
            "supervisor": str(ev.supervisor),
            "child_id": child_id_str(ev.child_id),
            "restarts": ev.restarts,
            "intensity": finite(ev.intensity),
            "period": finite(ev.period),
            "time": ev.time,
        }
        return gave_up
    if t is actors.MessageSent:
        out: M.TraceEvent = {
            "ev": "trace",
            "dir": "out",
            "pid": str(ev.sender),
            "to": str(ev.to),
            "message": encode_value(ev.message),
            "time": ev.time,
        }
        return out
    if t is actors.MessageReceived:
        in_: M.TraceEvent = {
            "ev": "trace",
            "dir": "in",
            "pid": str(ev.pid),
            "message": encode_value(ev.message),
            "time": ev.time,
        }
        return in_
    if isinstance(ev, dict):  # the agent's own events (loop_blocked, ...), built as M.Event
        return ev  # type: ignore[return-value]
    return None

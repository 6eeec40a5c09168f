"""Crash reports on the wire, the ring of recent ones, and the flight-recorder command.

:class:`CrashLog` lives on the agent's thread. For every ``Exited`` event that
carries a :class:`actors.CrashReport` the agent calls :meth:`CrashLog.note`,
which encodes the report (the same redaction as ``inspect``: secrets in the
message, the state and the flight recorder masked by key, free text -- the
reason, exception messages, source lines, the traceback -- by
:func:`redact_text`; every value bounded in size, depth and time) and keeps it
in a bounded ring for the post-mortem dump. Encoding never raises: a report
that cannot be encoded becomes ``{"pid": ..., "error": "..."}``.

A crash storm does not turn into an encoding storm: past ``max_per_s`` full
reports in one second, reports keep their traceback but leave out the
message, state and flight recorder (``"omitted": "rate"``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import actors

from . import messages as M
from . import protocol as P
from ._args import CommandError, int_arg, target_arg
from ._encode import finite
from ._redact import Redactor
from ._scrub import RedactionPolicy, redact_text

if TYPE_CHECKING:
    from ._commands import Commands
    from ._session import Session

log = logging.getLogger("agent")

MAX_TEXT = 16 * 1024
"""Characters of formatted traceback kept (head and tail)."""
RING_SIZE = 100
FLIGHT_MAX = 1000
"""Largest flight recorder size an observer may ask for."""


class CrashLog:
    """Encodes crash reports (agent thread) and keeps the latest ``size``."""

    def __init__(self, policy: RedactionPolicy, *, size: int = RING_SIZE, max_per_s: int = 50) -> None:
        self.policy = policy
        self.values = Redactor(dataclasses.replace(policy, max_bytes=16 * 1024, time_budget_s=0.01))
        self.small = Redactor(dataclasses.replace(policy, max_bytes=2048, max_string=300, time_budget_s=0.002))
        self.ring: deque[M.CrashReport | M.CrashReportError] = deque(maxlen=size)
        self.max_per_s = max_per_s
        self.omitted = 0
        self.total = 0
        self._window = 0.0
        self._in_window = 0

    def note(self, report: actors.CrashReport) -> M.CrashReport | M.CrashReportError:
        """Encode ``report``, remember it, return the wire form. Never raises."""
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window, self._in_window = now, 0
        self._in_window += 1
        full = self._in_window <= self.max_per_s
        if not full:
            self.omitted += 1
        d = self.encode(report, full=full)
        self.total += 1
        self.ring.append(d)
        return d

    def recent(self) -> list[M.CrashReport | M.CrashReportError]:
        return list(self.ring)

    def encode(self, r: actors.CrashReport, *, full: bool = True) -> M.CrashReport | M.CrashReportError:
        try:
            return self._encode(r, full)
        except Exception as exc:  # pragma: no cover - every step below is guarded already
            return {"pid": str(getattr(r, "pid", "?")), "error": f"report unavailable: {type(exc).__name__}"}

    def _text(self, s: str | None) -> str | None:
        return None if s is None else redact_text(s, self.policy)

    def _value(self, red: Redactor, v: Any) -> M.RedactedValue:
        e = red.encode(v)
        return {"value": e.data, "truncated": e.truncated, "masked": e.masked, "size": e.size}

    def _encode(self, r: actors.CrashReport, full: bool) -> M.CrashReport:
        text = r.traceback  # (built at each read: read once)
        excs = r.exceptions
        if text is not None and len(text) > MAX_TEXT:
            text = text[: MAX_TEXT // 4] + "\n[... traceback truncated ...]\n" + text[-3 * MAX_TEXT // 4 :]
        budget = r.budget
        pid_text, ancestry, sup_text = _pid_texts(r)
        d: M.CrashReport = {
            "pid": pid_text,
            "name": r.name,
            "label": r.label,
            "time": r.time,
            "reason": self._text(r.reason_text),
            "own": r.own,
            "kind": r.kind,
            "exception": excs[0].type if excs else None,
            "exceptions": [
                {
                    "type": e.type,
                    "message": self._text(e.message[:2000]),
                    "relation": e.relation,
                    "frames": [
                        {
                            "file": f.file,
                            "line": f.line,
                            "function": f.function,
                            "source": self._text(f.source[:500]) if f.source else None,
                            "own": f.own,
                        }
                        for f in e.frames
                    ],
                }
                for e in excs
            ],
            "traceback": self._text(text),
            "message_kind": r.message_kind,
            "message": None,
            "state": None,
            "ancestry": ancestry,
            "supervisor": sup_text,
            "child_id": _short(r.child_id),
            "restarts": r.restarts,
            "budget": None
            if budget is None
            else {
                "used": budget.used,
                "intensity": finite(budget.intensity),
                "period": finite(budget.period),
                "strategy": budget.strategy,
            },
            "flight": None,
            "handled": r.handled,
            "mailbox": r.mailbox,
        }
        if not full:
            d["omitted"] = "rate"
            return d
        if r.has_message:
            d["message"] = self._value(self.values, r.message)
        if r.has_state:
            d["state"] = self._value(self.values, r.state)
        if r.flight is not None:
            d["flight"] = [
                {
                    "time": f.time,
                    "duration": f.duration,
                    "kind": f.kind,
                    "message": self.small.encode(f.message).data,
                }
                for f in r.flight
            ]
        return d


def _pid_texts(r: actors.CrashReport) -> tuple[str, list[M.ReportAncestor], str | None]:
    """The report's pid, ancestry and supervisor as sent, each pid printed
    once (the ancestry ends with the process and, under a supervisor, the
    supervisor comes before it: the same pids)."""
    pid, sup = r.pid, r.supervisor
    pid_text = str(pid)
    sup_text = None
    ancestry: list[M.ReportAncestor] = []
    for a in r.ancestry:
        if a.pid is pid:
            text = pid_text
        else:
            text = str(a.pid)
            if a.pid is sup:
                sup_text = text
        ancestry.append({"pid": text, "name": a.name})
    if sup is not None and sup_text is None:
        sup_text = str(sup)
    return pid_text, ancestry, sup_text


def _short(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v[:200]
    try:
        return repr(v)[:200]
    except Exception:
        return f"<{type(v).__name__}>"


# -- the flight_recorder command (operator) -----------------------------------------------------


async def flight_recorder(commands: Commands, session: Session, args: dict[str, Any]) -> Any:
    """``flight_recorder {pid, on, size?, subtree?}``: switch a process's (or a
    subtree's) flight recorder; answers the pids changed."""

    target = target_arg(args)
    on = args.get("on", True)
    subtree = args.get("subtree", False)
    if not isinstance(on, bool) or not isinstance(subtree, bool):
        raise CommandError(P.E_BAD_ARGS, "'on' and 'subtree' must be booleans")
    size = int_arg(args, "size", 20, 1, FLIGHT_MAX)
    node = commands.agent.node
    pids = await commands.on_host(lambda: node.flight_recorder(target, on, size=size, subtree=subtree))
    return {"on": on, "size": size, "subtree": subtree, "pids": [str(p) for p in pids]}


async def dump(commands: Commands, session: Session, args: dict[str, Any]) -> Any:
    """``dump {}``: write a post-mortem dump now (to the agent's dump directory)."""
    import asyncio
    import threading

    dumper = getattr(commands.agent, "dumper", None)
    if dumper is None:
        raise CommandError(P.E_FAILED, "this agent has no dump directory (start it with dump_dir=...)")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str | None] = loop.create_future()

    def run() -> None:  # a thread of its own: the agent's loop keeps serving meanwhile
        path = dumper.write("requested by an observer")
        loop.call_soon_threadsafe(_resolve, done, path)

    threading.Thread(target=run, name="observer-agent-dump-request", daemon=True).start()
    path = await done
    if path is None:
        raise CommandError(P.E_FAILED, f"the dump could not be written: {dumper.last_error}")
    return {"path": path}


def _resolve(fut: Any, value: Any) -> None:
    if not fut.done():
        fut.set_result(value)

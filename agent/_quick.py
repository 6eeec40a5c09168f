"""The quick operator commands (``kill``, ``suspend``, ``resume``, ``send``),
answered from the host's loop (issue 17).

Each such command used to run on the host's loop and hand its result back to
the agent's loop, which woke the agent's thread once per command; that thread
then took the GIL from the host (at 1,000 kills/s the host's thread waited
more than 4 ms for it 23-39 times a run). Now the session's reader checks
such a command as it reads it (``Commands.run_quick``: no task, so its thread
parks sooner) and hands it to the host's loop, whose callback runs the
command, builds the reply (audit line included) and, while the agent's thread
is parked in ``select`` and nothing must go first, writes it to the session's
socket itself (:func:`agent._host_drain.host_reply`, under
``Agent.work_lock`` as the host-side drain); otherwise it hands the reply to
the agent's loop as before. A timer on the agent's loop still answers
``timeout`` when the host's loop does not run the command in time, and
whichever side claims the command first gives its only reply.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import actors

from . import protocol as P
from ._args import CommandError
from ._host_drain import host_reply
from ._outbox import error_reply

if TYPE_CHECKING:
    from ._commands import Commands
    from ._session import Session

audit = logging.getLogger("agent.audit")
log = logging.getLogger("agent")

HostCall = tuple[Callable[[], Any], Callable[[Any], Any]]
"""A quick command, its arguments checked: what to run on the host's loop, and
how its return value becomes the reply's result (cheap, any thread)."""
TIMEOUT_MESSAGE = "the actor system did not answer in time (its loop may be blocked)"


def answer_on_host(
    commands: Commands,
    session: Session,
    rid: int | str,
    cmd: str,
    args: dict[str, Any],
    call: HostCall,
    destructive: bool,
) -> None:
    """Agent loop: run ``call`` on the host's loop and answer from there.

    Exactly one reply, by whichever side claims ``claim`` first: the host's
    callback (it then runs the command and answers: written on the host's
    thread when :func:`host_reply` can, else handed to the
    agent's loop) or the timer on the agent's loop (``timeout``; the command
    is then not run, as a cancelled ``on_host`` call is not)."""
    agent = commands.agent
    loop = asyncio.get_running_loop()
    claim = threading.Lock()
    fn, result_of = call

    def on_timeout() -> None:  # agent loop
        if claim.acquire(blocking=False):
            if destructive:
                audit_line(session, cmd, args, f"error {P.E_TIMEOUT}")
            session.inflight -= 1
            session.reply(error_reply(rid, P.E_TIMEOUT, TIMEOUT_MESSAGE))

    def handed(reply: P.ReplyMsg) -> None:  # agent loop: the host could not write it
        timer.cancel()
        session.inflight -= 1
        session.reply(reply)

    def on_host() -> None:  # host loop; never raises into it
        if not claim.acquire(blocking=False):
            return  # timed out (answered) before the host's loop got to it
        commands.host_answers += 1
        reply = _answer(session, rid, cmd, args, fn, result_of, destructive)
        try:
            if host_reply(agent, session, reply, timer):
                commands.host_replies += 1
                return
        except Exception:  # the agent's loop writes it then
            log.exception("agent: writing the reply to %s on the host failed", cmd)
        try:
            loop.call_soon_threadsafe(handed, reply)
        except RuntimeError:  # the agent's loop closed meanwhile: nobody left to answer
            pass

    timer = loop.call_later(agent.command_timeout, on_timeout)
    try:
        agent.source.loop.call_soon_threadsafe(on_host)
    except RuntimeError:  # the host's loop is closed
        timer.cancel()
        claim.acquire(blocking=False)
        session.inflight -= 1
        session.reply(error_reply(rid, P.E_FAILED, "the actor system's loop is closed"))


def _answer(
    session: Session,
    rid: int | str,
    cmd: str,
    args: dict[str, Any],
    fn: Callable[[], Any],
    result_of: Callable[[Any], Any],
    destructive: bool,
) -> P.ReplyMsg:
    """Host loop: run a quick command and build its reply, as :meth:`run` does."""
    try:
        result = result_of(fn())
    except CommandError as exc:
        if destructive:
            audit_line(session, cmd, args, f"error {exc.code}")
        return error_reply(rid, exc.code, str(exc))
    except actors.NoProcess as exc:
        return error_reply(rid, P.E_NO_SUCH_PROCESS, str(exc))
    except Exception as exc:  # exactly one reply, whatever happens (as agent/_session.py's)
        log.exception("agent command %r failed", cmd)
        return error_reply(rid, P.E_FAILED, f"{type(exc).__name__}")
    if destructive:
        audit_line(session, cmd, args, "ok")
    ok: P.ReplyOk = {"t": "reply", "id": rid, "ok": True, "result": result}
    return ok


def audit_line(session: Session, cmd: str, args: dict[str, Any], outcome: str) -> None:
    audit.info("agent: %s %s by %s (%s): %s", cmd, brief(args), session.peer, session.id, outcome)


def brief(args: dict[str, Any]) -> str:
    parts = []
    for k in ("pid", "to", "supervisor", "child_id", "reason"):
        if k in args:
            parts.append(f"{k}={str(args[k])[:60]}")
    return " ".join(parts)

"""Observer commands: each gets exactly one reply, errors included.

Anything that touches the runtime runs on the host's loop (scheduled with
``run_coroutine_threadsafe``) and is bounded by a timeout, so a blocked host
yields a ``timeout`` error rather than a stuck agent. Encoding of state and
messages (redaction, size and time caps) happens back on the agent's thread.

The quick operator commands (``kill``, ``suspend``, ``resume``, ``send``) are
checked here and answered from the host's loop itself (agent/_quick.py): the
result does not come back through the agent's thread (issue 17).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import actors
from actors import process_stack

from . import _crash, _quick
from . import protocol as P
from ._args import CommandError, int_arg, reason_arg, target_arg
from ._encode import budget_dict, child_id_str, process_record
from ._trace import TraceError

if TYPE_CHECKING:
    from ._agent import Agent
    from ._session import Session

audit = logging.getLogger("agent.audit")

Handler = Callable[["Session", dict[str, Any]], Awaitable[Any]]
HostCall = _quick.HostCall
TIMEOUT_MESSAGE = _quick.TIMEOUT_MESSAGE


class Commands:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.handlers: dict[str, Handler] = {
            "ping": self.ping,
            "snapshot": self.snapshot,
            "info": self.info,
            "inspect": self.inspect,
            "mailbox": self.mailbox,
            "processes": self.processes,
            "kill": self.kill,
            "suspend": self.suspend,
            "resume": self.resume,
            "send": self.send,
            "restart_child": self.restart_child,
            "terminate_child": self.terminate_child,
            "trace": self.trace,
            "flight_recorder": functools.partial(_crash.flight_recorder, self),
            "dump": functools.partial(_crash.dump, self),
            "cancel": self.unsupported,
        }
        assert set(self.handlers) == set(P.ALL_COMMANDS)
        replaced = agent.source.handlers(self)
        self.handlers.update(replaced)
        quick: dict[str, Callable[[dict[str, Any]], HostCall]] = {
            "kill": self._kill,
            "suspend": self._suspend,
            "resume": self._resume,
            "send": self._send,
        }
        self.quick = {cmd: prepare for cmd, prepare in quick.items() if cmd not in replaced}
        """The commands answered from the host's loop (those a source did not replace)."""
        self.host_replies = 0
        """Replies written from the host's thread (tests and benchmarks)."""
        self.host_answers = 0
        """Quick commands answered from the host's loop, written there or handed to the agent's loop."""

    async def run(self, session: Session, rid: int | str, cmd: Any, args: Any) -> P.ReplyMsg:
        refused = self._refusal(session, rid, cmd, args)
        if refused is not None:
            return refused
        if args is None:
            args = {}
        # an untimed trace is audited as before; a trace session audits itself (agent/_trace.py)
        destructive = cmd in P.OPERATOR_COMMANDS or (cmd == "trace" and "id" not in args)
        try:
            result = await self.handlers[cmd](session, args)
        except CommandError as exc:
            if destructive:
                _quick.audit_line(session, cmd, args, f"error {exc.code}")
            return _err(rid, exc.code, str(exc))
        except actors.NoProcess as exc:
            return _err(rid, P.E_NO_SUCH_PROCESS, str(exc))
        if destructive:
            _quick.audit_line(session, cmd, args, "ok")
        ok: P.ReplyOk = {"t": "reply", "id": rid, "ok": True, "result": result}
        return ok

    def run_quick(self, session: Session, rid: int | str, cmd: Any, args: Any) -> P.ReplyMsg | bool:
        """Agent loop, as the command is read (no task): a quick command
        (``kill``, ``suspend``, ``resume``, ``send``) handed to the host's loop,
        which answers it and gives the session's ``inflight`` slot back (True);
        its reply now if it is refused (the checks and audit of :meth:`run`);
        False if it is not a quick command (or host-side work is off): run it."""
        prepare = self.quick.get(cmd) if isinstance(cmd, str) else None
        if prepare is None or self.agent.collector.host_work is None:
            return False
        refused = self._refusal(session, rid, cmd, args)
        if refused is not None:
            return refused
        if args is None:
            args = {}
        destructive = cmd in P.OPERATOR_COMMANDS
        try:
            call = prepare(args)
        except CommandError as exc:
            if destructive:
                _quick.audit_line(session, cmd, args, f"error {exc.code}")
            return _err(rid, exc.code, str(exc))
        _quick.answer_on_host(self, session, rid, cmd, args, call, destructive)
        return True

    def _refusal(self, session: Session, rid: int | str, cmd: Any, args: Any) -> P.ReplyMsg | None:
        """The checks before a command runs, in order (docs/protocol.md §7)."""
        if not isinstance(cmd, str) or cmd not in self.handlers:
            return _err(rid, P.E_UNKNOWN_COMMAND, f"unknown command {str(cmd)[:40]!r}")
        if cmd not in self.agent.source.commands:
            kind = self.agent.source.kind
            return _err(rid, P.E_UNKNOWN_COMMAND, f"'{cmd}' is not supported by this node (node_kind {kind})")
        if cmd not in session.commands:
            audit.warning(
                "agent: refused %s from %s (%s, role %s): not permitted", cmd, session.peer, session.id, session.role
            )
            return _err(rid, P.E_NOT_PERMITTED, f"'{cmd}' is not permitted for role '{session.role}'")
        if args is not None and not isinstance(args, dict):
            return _err(rid, P.E_BAD_ARGS, "'args' must be an object")
        return None

    async def on_host(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn()`` on the host loop (between two process steps) and return its result."""
        agent = self.agent

        async def call() -> Any:
            res = fn()
            if asyncio.iscoroutine(res):
                res = await res
            return res

        cf = asyncio.run_coroutine_threadsafe(call(), agent.source.loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(cf), timeout or agent.command_timeout)
        except TimeoutError:
            cf.cancel()
            raise CommandError(P.E_TIMEOUT, TIMEOUT_MESSAGE) from None

    async def unsupported(self, session: Session, args: dict[str, Any]) -> Any:
        raise CommandError(P.E_UNKNOWN_COMMAND, f"not supported by this node (node_kind {self.agent.source.kind})")

    # -- read-only --------------------------------------------------------------------------------

    async def ping(self, session: Session, args: dict[str, Any]) -> Any:
        return {"pong": True, "seq": self.agent.seq}

    async def snapshot(self, session: Session, args: dict[str, Any]) -> Any:
        session.request_resync()
        return {"resync": True}

    async def processes(self, session: Session, args: dict[str, Any]) -> Any:
        limit = int_arg(args, "limit", 1000, 0, 10_000)
        offset = int_arg(args, "offset", 0, 0, 1 << 40)
        procs = self.agent.node_processes()[offset : offset + limit]
        return {"count": self.agent.source.count(), "offset": offset, "procs": self.agent.node_records(procs)}

    async def info(self, session: Session, args: dict[str, Any]) -> Any:
        target = target_arg(args)
        node = self.agent.node

        def read() -> dict[str, Any]:
            p = node.process(target)
            rec: dict[str, Any] = {**process_record(p)}
            rec["stack"] = [{"function": f.function, "file": f.filename, "line": f.lineno} for f in process_stack(p)]
            rec["memory"] = node.memory(p.pid)
            rec["monitored_by"] = [str(x) for x in node.info(p.pid).monitored_by]
            return rec

        return await self.on_host(read)

    async def inspect(self, session: Session, args: dict[str, Any]) -> Any:
        """Info, stack, supervisor children, state and a mailbox peek (redacted)."""
        target = target_arg(args)
        peek = int_arg(args, "mailbox_limit", 10, 0, 100)
        node = self.agent.node

        def read() -> dict[str, Any]:
            p = node.process(target)
            rec: dict[str, Any] = {**process_record(p)}
            rec["stack"] = [{"function": f.function, "file": f.filename, "line": f.lineno} for f in process_stack(p)]
            rec["memory"] = node.memory(p.pid)
            rec["monitored_by"] = [str(x) for x in node.info(p.pid).monitored_by]
            b = p.behaviour
            rec["_state"] = b.state if isinstance(b, actors.GenServer) else _NO_STATE
            rec["_mailbox"] = p.mailbox_peek(peek)
            fl = actors.flight_recorder_info(p)
            rec["flight_recorder"] = None if fl is None else {"size": fl.size, "subtree": fl.subtree}
            if isinstance(b, actors.Supervisor):
                rec["children"] = [
                    {
                        "id": child_id_str(c.id),
                        "pid": str(c.pid) if c.pid else None,
                        "type": c.type,
                        "restarts": c.restarts,
                    }
                    for c in b.child_rows()
                ]
                rec["budget"] = budget_dict(p)
            return rec

        rec = await self.on_host(read)
        red = self.agent.redactor
        state = rec.pop("_state")
        if state is _NO_STATE:
            rec["state"] = None
        else:
            enc = red.encode(state)
            rec["state"] = {"value": enc.data, "truncated": enc.truncated, "masked": enc.masked}
        mb = rec.pop("_mailbox")
        encs = [red.encode(m) for m in mb]
        rec["mailbox_peek"] = {
            "messages": [e.data for e in encs],
            "truncated": any(e.truncated for e in encs) or rec["mailbox"] > len(mb),
            "masked": sum(e.masked for e in encs),
        }
        return rec

    async def mailbox(self, session: Session, args: dict[str, Any]) -> Any:
        target = target_arg(args)
        limit = int_arg(args, "limit", 20, 0, 200)
        node = self.agent.node
        msgs, total = await self.on_host(lambda: _peek(node.process(target), limit))
        encs = [self.agent.redactor.encode(m) for m in msgs]
        return {
            "messages": [e.data for e in encs],
            "total": total,
            "truncated": total > len(msgs) or any(e.truncated for e in encs),
            "masked": sum(e.masked for e in encs),
        }

    # -- operator ----------------------------------------------------------------------------------

    async def kill(self, session: Session, args: dict[str, Any]) -> Any:
        return await self._on_host_call(self._kill(args))

    async def suspend(self, session: Session, args: dict[str, Any]) -> Any:
        return await self._on_host_call(self._suspend(args))

    async def resume(self, session: Session, args: dict[str, Any]) -> Any:
        return await self._on_host_call(self._resume(args))

    async def send(self, session: Session, args: dict[str, Any]) -> Any:
        return await self._on_host_call(self._send(args))

    async def _on_host_call(self, call: HostCall) -> Any:
        """A quick command the agent's way (host-side work off: ``host_drain=False``)."""
        fn, result_of = call
        return result_of(await self.on_host(fn))

    # the quick commands: arguments checked here (agent loop), the rest on the host's loop

    def _kill(self, args: dict[str, Any]) -> HostCall:
        target = target_arg(args)
        reason = reason_arg(args)
        node = self.agent.node

        def do() -> str:
            p = node.process(target)
            node.exit(p.pid, reason)
            return str(p.pid)

        return do, lambda pid: {"pid": pid, "reason": reason}

    def _suspend(self, args: dict[str, Any]) -> HostCall:
        target = target_arg(args)
        node = self.agent.node
        return lambda: node.suspend(target), lambda _: {"suspended": True}

    def _resume(self, args: dict[str, Any]) -> HostCall:
        target = target_arg(args)
        node = self.agent.node
        return lambda: node.resume(target), lambda _: {"resumed": True}

    def _send(self, args: dict[str, Any]) -> HostCall:
        target = target_arg(args, "to")
        if "message" not in args:
            raise CommandError(P.E_BAD_ARGS, "'message' is required (any JSON value)")
        message = _freeze(args["message"])
        node = self.agent.node

        def do() -> None:
            node.process(target)  # a dead pid is an error here, not a silent drop
            node.send(target, message)

        return do, lambda _: {"sent": True}

    async def restart_child(self, session: Session, args: dict[str, Any]) -> Any:
        pid = await self._child_op(actors.restart_child, args)
        return {"pid": str(pid) if pid else None}

    async def terminate_child(self, session: Session, args: dict[str, Any]) -> Any:
        await self._child_op(actors.terminate_child, args)
        return {"terminated": True}

    async def _child_op(self, op: Callable[..., Awaitable[Any]], args: dict[str, Any]) -> Any:
        """A supervisor call on the host, bounded below the command timeout."""
        sup = target_arg(args, "supervisor")
        cid = args.get("child_id")
        node = self.agent.node
        timeout = max(self.agent.command_timeout - 0.5, 0.1)

        async def do() -> Any:
            node.process(sup)
            return await op(node, sup, _child_key(node, sup, cid), timeout=timeout)

        try:
            return await self.on_host(do)
        except actors.CallTimeout:
            raise CommandError(P.E_TIMEOUT, "the supervisor did not answer in time") from None
        except actors.SupervisorError as exc:
            raise CommandError(P.E_FAILED, f"supervisor refused: {exc.reason!r}"[:300]) from None

    async def trace(self, session: Session, args: dict[str, Any]) -> Any:
        if "id" in args:  # a trace session with limits (agent/_trace.py)
            try:
                return await self.agent.tracer.command(self.on_host, session, args)
            except TraceError as exc:
                raise CommandError(exc.code, str(exc)) from None
        if session.role != P.ROLE_OPERATOR:
            raise CommandError(P.E_NOT_PERMITTED, "an untimed trace needs the operator role; give an 'id' and limits")
        pids = args.get("pids")
        on = args.get("on", True)
        if not isinstance(pids, list) or not pids or len(pids) > 100 or not isinstance(on, bool):
            raise CommandError(P.E_BAD_ARGS, "'pids' must be a list of 1-100 pids and 'on' a boolean")
        targets = [target_arg({"pid": p}) for p in pids]
        node = self.agent.node
        agent = self.agent

        def do() -> list[str]:
            done = []
            for t in targets:
                p = actors.find_process(node, t)
                if p is None:
                    continue
                key = str(p.pid)
                if on:
                    session.traced.add(key)
                    node.trace(p.pid, True)
                else:
                    session.traced.discard(key)
                    if not agent.traced_elsewhere(key, session):
                        node.trace(p.pid, False)
                        agent.collector.forget_trace(p.pid)
                done.append(key)
            return done

        done = await self.on_host(do)
        if not done:
            raise CommandError(P.E_NO_SUCH_PROCESS, "none of the pids is alive")
        return {"traced" if on else "untraced": done, "rate_limit_per_s": agent.collector.trace_rate}


_NO_STATE = object()


def _err(rid: int | str, code: str, message: str) -> P.ReplyError:
    return {"t": "reply", "id": rid, "ok": False, "error": {"code": code, "message": message}}


def _freeze(value: Any) -> Any:
    """JSON arrays become tuples (hashable, pattern-friendly, like Erlang tuples)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return {k: _freeze(v) for k, v in value.items()}
    return value


def _peek(p: actors.Process, limit: int) -> tuple[list[Any], int]:
    return p.mailbox_peek(limit), p.mailbox_len


def _child_key(node: actors.Node, sup: actors.Pid | str, cid: Any) -> Any:
    """Map a child id as seen on the wire (its string form, or a child's pid
    for dynamic children) back to the real id."""
    if not isinstance(cid, str) or not cid:
        raise CommandError(P.E_BAD_ARGS, "'child_id' must be a non-empty string")
    b = node.process(sup).behaviour
    if not isinstance(b, actors.Supervisor):
        raise CommandError(P.E_BAD_ARGS, "not a supervisor")
    for row in b.child_rows():
        if row.id == cid or child_id_str(row.id) == cid:
            return row.id
        if row.pid is not None and str(row.pid) == cid:
            return row.pid
    raise CommandError(P.E_BAD_ARGS, f"no child {str(cid)[:60]!r} under that supervisor")

"""The asyncio source's commands (a mixin of
:class:`agent._aio_source.AsyncioSource`): ``info``/``inspect`` (the await
chain, what the task waits on, what cancelling it would do) and ``cancel``,
the asyncio kill. Reading a task runs on the host loop, bounded by the
agent's command timeout; encoding runs on the agent's thread.
"""

from __future__ import annotations

import asyncio
import sys
import time
import types
from typing import TYPE_CHECKING, Any

from . import _aio_inspect as ins
from . import protocol as P
from ._aio_records import ScopeRec, TaskRec, _cancelling, _current, _record, _status, timeout_state
from ._aio_timeouts import timeout_deadline
from ._args import CommandError

if TYPE_CHECKING:
    from ._commands import Commands
    from ._session import Session
    from ._source import Handler


class TaskCommands:
    """Needs the source's records, loop and record builders."""

    loop: asyncio.AbstractEventLoop
    live: dict[int, TaskRec]
    scopes: dict[int, ScopeRec]
    root_key: str
    _tmo_of: dict[str, list[ScopeRec]]

    def records(self, units: list[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def _rec_of(self, task: asyncio.Task[Any]) -> TaskRec | None:
        raise NotImplementedError

    def _task_fields(self, rec: TaskRec, task: asyncio.Task[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def handlers(self, commands: Commands) -> dict[str, Handler]:
        async def info(session: Session, args: dict[str, Any]) -> Any:
            return await self._inspect(commands, args)

        async def cancel(session: Session, args: dict[str, Any]) -> Any:
            return await self._cancel(commands, args)

        return {"info": info, "inspect": info, "cancel": cancel}

    def _find(self, args: dict[str, Any]) -> TaskRec | ScopeRec | str:
        raw = args.get("pid")
        if not isinstance(raw, str) or not raw or len(raw) > 200:
            raise CommandError(P.E_BAD_ARGS, "'pid' must be a task id like <0.42.0>")
        if raw == self.root_key:
            return raw
        for rec in list(self.live.values()):
            if rec.key == raw:
                return rec
        for s in list(self.scopes.values()):
            if s.key == raw:
                return s
        raise CommandError(P.E_NO_SUCH_PROCESS, f"no task {raw[:60]!r} on this loop")

    async def _inspect(self, commands: Commands, args: dict[str, Any]) -> Any:
        target = self._find(args)
        if isinstance(target, str):
            return {**self.records([target])[0], "tasks": len(self.live), "stats": self.stats()}
        if isinstance(target, ScopeRec):
            rec = self.records([target])[0]
            rec["children"] = [r.key for r in list(self.live.values()) if r.scope is target]
            if target.kind == "timeout":
                rec.update(self._timeout_fields(target))
            return rec
        trec = target

        def read() -> dict[str, Any]:
            task = trec.ref()
            if task is None:
                raise _Gone
            frames, end = ins.await_chain(task)
            waits = ins.waits_on(task, frames, self._key_of)
            return {
                "stack": ins.frame_dicts(frames),
                "waits_on": waits,
                "awaitable": None if end is None else ins.short_type(end),
                "status": _status(task, _current(self.loop)),
                "memory": _memory(task, frames),
                "cancel_preview": self._cancel_preview(trec, task),
                **self._task_fields(trec, task),
            }

        try:
            live = await commands.on_host(read)
        except _Gone:
            raise CommandError(P.E_NO_SUCH_PROCESS, "the task has finished") from None
        rec = _record(trec.key, trec.name, trec.coro, trec.sup, trec.parent, live.pop("status"), trec.created, "task")
        rec.update(live)
        rec["age_s"] = round(time.time() - trec.created, 3)
        rec["scope"] = None if trec.scope is None else {"pid": trec.scope.key, "kind": trec.scope.kind}
        rec["timeouts"] = [{"pid": s.key, **self._timeout_fields(s)} for s in list(self._tmo_of.get(trec.key, ()))]
        rec["state"] = None  # no gen_server state: a task has its task_state
        return rec

    def _timeout_fields(self, s: ScopeRec) -> dict[str, Any]:
        """A timeout's deadline (wall clock), the seconds left and its state."""
        obj = s.ref()
        when = timeout_deadline(obj) if obj is not None else s.deadline
        left = None if when is None else round(when - self.loop.time(), 3)
        return {
            "deadline": None if left is None else round(time.time() + left, 3),
            "remaining_s": left,
            "timeout_state": timeout_state(obj) if obj is not None else "finished",
            "task": s.parent,
        }

    def _cancel_preview(self, trec: TaskRec, task: asyncio.Task[Any]) -> list[str]:
        """What cancelling the task would do, as structured concurrency goes (host loop)."""
        out = []
        n = _cancelling(task)
        if n:
            out.append(f"cancellation already requested {n} time(s)")
        recs = list(self.live.values())
        scope = trec.scope
        if scope is not None:
            others = sum(1 for r in recs if r.scope is scope) - 1
            if scope.kind == "taskgroup":
                out.append(
                    f"its TaskGroup {scope.key} goes on: a cancelled child does not cancel its {others} sibling(s); "
                    f"if the task turns the cancellation into another exception, the group cancels them and "
                    f"raises an ExceptionGroup in {scope.sup}"
                )
            elif scope.kind == "timeout":
                out.append(
                    f"it was created inside timeout {scope.key} of {scope.sup}: that timeout cancels only "
                    f"{scope.sup} when it expires, not this task"
                )
            else:
                out.append(
                    f"gather {scope.key} ends with CancelledError: the task awaiting it ({scope.sup}) gets it "
                    f"unless it passed return_exceptions=True; the other {others} child(ren) go on"
                )
        for r in recs:
            t = r.ref()
            if t is not None and t is not task and ins.task_waiter(t) is task:
                out.append(f"{r.key} ({r.name}) awaits it and gets CancelledError, unless it catches it")
        if not out:
            out.append("the task gets CancelledError where it waits; no task awaits it")
        return out

    def _key_of(self, task: asyncio.Task[Any]) -> str | None:
        rec = self._rec_of(task)
        return rec.key if rec is not None else None

    async def _cancel(self, commands: Commands, args: dict[str, Any]) -> Any:
        target = self._find(args)
        if not isinstance(target, TaskRec):
            raise CommandError(P.E_BAD_ARGS, "only a task can be cancelled (not a scope or the loop)")
        msg = args.get("reason", "cancelled by an observer")
        if not isinstance(msg, str) or len(msg) > 200:
            raise CommandError(P.E_BAD_ARGS, "'reason' must be a short string")
        rec = target

        def do() -> dict[str, Any]:
            task = rec.ref()
            if task is None or task.done():
                raise _Gone
            requested = task.cancel(msg)
            return {"pid": rec.key, "cancelled": requested, "cancelling": _cancelling(task)}

        try:
            return await commands.on_host(do)
        except _Gone:
            raise CommandError(P.E_NO_SUCH_PROCESS, "the task has already finished") from None


class _Gone(Exception):
    pass


def _memory(task: asyncio.Task[Any], frames: list[types.FrameType]) -> int:
    """A shallow estimate in bytes: the task, its suspended frames and what
    their locals refer to directly (sizes of builtin objects only: no
    ``__sizeof__`` of the application's own runs)."""
    total = sys.getsizeof(task)
    for fr in frames:
        total += sys.getsizeof(fr)
        try:
            values = list(fr.f_locals.values())[:200]
        except Exception:
            continue
        for v in values:
            total += sys.getsizeof(v) if type(v).__module__ == "builtins" else object.__sizeof__(v)
    return total

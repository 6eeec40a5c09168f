"""The asyncio source: a plain event loop's tasks as a live tree.

What the host pays (its loop thread), per task: the task factory (chained
with whatever factory the application had set) notes the task, the task
current at its creation and the line that created it, adds one done callback,
and queues a tuple for the agent; the done callback queues another. Nothing
is formatted or encoded on the host. A hook that fails is counted
(``hook_errors``) and the application's task is returned untouched.

What is shown (see ``docs/asyncio.md``):

* every task, under the structured scope that owns it, else the task that
  created it (while that task lives), else the loop. Scopes are found
  through what the task carries, never by patching: a :class:`asyncio.TaskGroup`'s
  tasks hold the group's bound ``_on_task_done`` among their done
  callbacks (the group's ``_parent_task`` places the group); ``gather``'s
  children hold its ``_done_callback``, whose closure holds the gathering
  future. Scopes are drawn as grouping nodes (kind ``taskgroup``/``gather``).
* tasks that existed before the agent attached, under the loop, or under
  the task that awaits them.
* per task: name, coroutine, state, creation site, age, cancellations
  requested; on ``inspect`` the await chain and what it waits on.

Threads: the factory, the done callback and the exception handler run on the
host loop; everything else on the agent's thread, reading tasks through weak
references (the agent never keeps a task alive).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from . import _aio_inspect as ins
from . import protocol as P
from ._commands import CommandError
from ._source import Handler, Source

if TYPE_CHECKING:
    from ._agent import Agent
    from ._commands import Commands
    from ._session import Session

log = logging.getLogger("agent")

_SKIP_DIRS = (os.path.dirname(asyncio.__file__) + os.sep, os.path.dirname(__file__) + os.sep)
_HANDLE_RUN = asyncio.events.Handle._run.__code__
"""Walking up from the factory, this frame means "created from a loop callback"."""
_THREADSAFE_CB = next(
    (c for c in asyncio.run_coroutine_threadsafe.__code__.co_consts if getattr(c, "co_name", None) == "callback"),
    None,
)
_GATHER_CB = "gather.<locals>._done_callback"
RECHECK_S = 1.0
"""How long after its spawn a task's scope is looked for again (a TaskGroup
adds its done callback right after the factory returns)."""


class TaskRec:
    """One task (host thread creates it; the agent thread fills ``sup`` and the counters)."""

    __slots__ = (
        "key",
        "ref",
        "root",
        "parent",
        "created",
        "where",
        "origin",
        "name",
        "coro",
        "sup",
        "scope",
        "steps",
        "time_s",
        "pos",
        "row",
        "spawned",
        "__weakref__",
    )

    def __init__(self, key: str, task: asyncio.Task[Any], root: str, parent: str | None, origin: str) -> None:
        self.key = key
        self.ref = weakref.ref(task)
        self.root = root
        self.parent = parent
        self.created = time.time()
        self.where: tuple[str, int, str] | None = None
        self.origin = origin
        self.name: str | None = None
        self.coro: str | None = None
        self.sup: str | None = None
        self.scope: ScopeRec | None = None
        self.steps = 0
        self.time_s = 0.0
        self.pos: tuple[int, int] | None = None
        self.row: list[Any] | None = None
        self.spawned = 0.0


class ScopeRec:
    """A TaskGroup or a gather (agent thread only)."""

    __slots__ = ("key", "kind", "ref", "sup", "parent", "created", "children", "root")

    def __init__(self, key: str, kind: str, obj: object, sup: str, parent: str | None, root: str) -> None:
        self.key = key
        self.kind = kind
        self.ref = weakref.ref(obj)
        self.sup = sup
        self.parent = parent
        self.root = root
        self.created = time.time()
        self.children = 0


class AsyncioSource(Source):
    """Observes the tasks of one asyncio event loop (and, with :meth:`retarget`,
    of the loops that follow it in the same process)."""

    kind = "asyncio"
    commands = frozenset({"ping", "snapshot", "info", "inspect", "processes", "cancel"})

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.agent: Agent | None = None
        self.started_at = time.time()
        self.node_id = f"asyncio-{os.getpid()}"
        self._ids = itertools.count(1)
        self.root_key = self._key()
        self.live: dict[int, TaskRec] = {}
        """id(task) -> record, for the tasks alive (host thread adds and removes)."""
        self.scopes: dict[int, ScopeRec] = {}
        self.shown: dict[str, tuple[str | None, str | None]] = {}
        """Agent thread: key -> (supervisor, name) of what observers were told of."""
        self._crashed: dict[int, None] = {}
        """id() of the latest exceptions reported from tasks (bounded), so the
        loop's exception handler does not report them twice."""
        self._prev_factory: Any = None
        self._prev_handler: Any = None
        self._prev_record_factory: Any = None
        self._on = False
        self.created_total = 0
        self.finished_total = 0
        self.hook_errors = 0
        self.factory_replaced = False
        """True once the application set its own task factory over the agent's."""
        self._fresh: deque[TaskRec] = deque()
        self._rate_at = time.monotonic()
        self._rate_counts = (0, 0)
        self._rescan_at = 0.0

    def _key(self) -> str:
        return f"<0.{next(self._ids)}.0>"

    # -- host side ---------------------------------------------------------------------------

    def attach(self, agent: Agent) -> None:
        self.agent = agent
        self._on = True
        self._prev_record_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(self._make_record)
        self._install_soon(self.loop)

    def _install_soon(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here or not loop.is_running():
            self._install(loop)
        else:
            loop.call_soon_threadsafe(self._install, loop)

    def _install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Host loop (or before it runs): set the factory and the exception handler, adopt the tasks."""
        if not self._on or loop is not self.loop or loop.is_closed():
            return
        prev = loop.get_task_factory()
        if prev is not self._factory:
            self._prev_factory = prev
            loop.set_task_factory(self._factory)
        handler = loop.get_exception_handler()
        if handler is not self._on_exception:
            self._prev_handler = handler
            loop.set_exception_handler(self._on_exception)
        self._adopt_all(loop)

    def _adopt_all(self, loop: asyncio.AbstractEventLoop) -> None:
        """Track the tasks the factory did not see (they existed before, or an
        application factory replaced ours), placed by who awaits them."""
        try:
            tasks = asyncio.all_tasks(loop)
        except RuntimeError:
            return
        awaited_by: dict[int, asyncio.Task[Any]] = {}
        for t in tasks:
            fut = getattr(t, "_fut_waiter", None)
            if isinstance(fut, asyncio.Task):
                awaited_by[id(fut)] = t
            elif fut is not None and type(fut).__name__ == "_GatheringFuture":
                for c in getattr(fut, "_children", ()) or ():
                    awaited_by[id(c)] = t
        pending = [t for t in tasks if self._rec_of(t) is None]
        # parents first, so that children find them
        pending.sort(key=lambda t: id(t) in awaited_by)
        for t in pending:
            w = awaited_by.get(id(t))
            self._track(t, None, origin="adopted", parent=w)

    def detach(self) -> None:
        self._on = False
        if logging.getLogRecordFactory() == self._make_record:
            logging.setLogRecordFactory(self._prev_record_factory)
        loop = self.loop
        if loop.is_closed():
            return

        def undo() -> None:
            if loop.get_task_factory() is self._factory:
                loop.set_task_factory(self._prev_factory)
            if loop.get_exception_handler() is self._on_exception:
                loop.set_exception_handler(self._prev_handler)

        try:
            if asyncio.get_running_loop() is loop:
                undo()
                return
        except RuntimeError:
            pass
        if loop.is_running():
            try:
                loop.call_soon_threadsafe(undo)
            except RuntimeError:
                pass
        else:
            undo()

    def retarget(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow a new loop (the application ran ``asyncio.run`` again, say).
        Call before the loop runs or from its thread."""
        if loop is self.loop:
            return
        old = self.loop
        if not old.is_closed() and old.get_task_factory() is self._factory:
            old.set_task_factory(self._prev_factory)
        self.loop = loop
        old_root, self.root_key = self.root_key, self._key()
        ag = self.agent
        if ag is not None:
            ag.collector.host_loop = loop
            ag._tick_due = None
            self._put(("loop", old_root))
            self._install(loop)
            try:
                loop.call_soon_threadsafe(ag._record_host_thread)
                loop.call_soon_threadsafe(ag._host_tick)
            except RuntimeError:
                pass

    def _hook_failed(self) -> None:
        """A host-side hook raised: count it (the first few are logged); the host goes on."""
        self.hook_errors += 1
        if self.hook_errors <= 5:
            log.warning("agent: an asyncio hook failed (%d so far)", self.hook_errors, exc_info=True)

    def _put(self, ev: Any) -> None:
        ag = self.agent
        if ag is not None:
            ag.collector.put(ev)

    def _factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        prev = self._prev_factory
        task: asyncio.Task[Any]
        task = asyncio.Task(coro, loop=loop, **kwargs) if prev is None else prev(loop, coro, **kwargs)
        if self._on and loop is self.loop:
            try:
                self._track(task, sys._getframe(1), origin="task", parent=None)
            except Exception:
                self._hook_failed()
        return task

    def _rec_of(self, task: asyncio.Task[Any]) -> TaskRec | None:
        rec = self.live.get(id(task))
        return rec if rec is not None and rec.ref() is task else None

    def _track(
        self, task: asyncio.Task[Any], frame: Any, *, origin: str, parent: asyncio.Task[Any] | None
    ) -> TaskRec | None:
        tid = id(task)
        rec = self.live.get(tid)
        if rec is not None:
            if rec.ref() is task:  # met first as a parent (an eager task's child): complete it
                if rec.where is None and frame is not None:
                    rec.where, rec.origin = _site(frame, rec.origin)
                return rec
            self._gone(rec)  # a collected task's id, reused
        if task.done() and origin == "adopted":
            return None
        if origin == "task":
            parent = asyncio.current_task(self.loop)
        pkey = None
        if parent is not None and parent is not task:
            prec = self._rec_of(parent)
            if prec is None:
                prec = self._track(parent, None, origin="adopted", parent=None)
            pkey = prec.key if prec is not None else None
        rec = TaskRec(self._key(), task, self.root_key, pkey, origin)
        rec.name = _task_name(task)
        try:
            rec.coro = ins.coro_name(task.get_coro())
        except Exception:
            rec.coro = None
        if frame is not None:
            rec.where, rec.origin = _site(frame, origin)
        self.live[tid] = rec
        self.created_total += 1
        task.add_done_callback(self._on_done)
        self._put(("spawn", rec))
        return rec

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        tid = id(task)
        rec = self.live.get(tid)
        if rec is None or rec.ref() is not task:
            return
        del self.live[tid]
        self.finished_total += 1
        try:
            rec.name = _task_name(task)  # final: create_task(name=...) names it after the factory
            if task.cancelled():
                state, exc = "cancelled", None
            else:
                # the attribute, not task.exception(): that would mark the
                # exception retrieved and silence asyncio's own warning
                exc = task._exception
                state = "failed" if exc is not None else "done"
                if exc is not None:
                    self._note_crash(exc)
            self._put(("exit", rec, state, exc, time.time()))
        except Exception:
            self._hook_failed()

    def _note_crash(self, exc: BaseException) -> None:
        crashed = self._crashed
        crashed[id(exc)] = None
        if len(crashed) > 1000:
            del crashed[next(iter(crashed))]

    def _gone(self, rec: TaskRec) -> None:
        """A task collected while pending (asyncio warns "Task was destroyed but it is pending")."""
        for k, v in list(self.live.items()):
            if v is rec:
                self.live.pop(k, None)
        self.finished_total += 1
        self._put(("exit", rec, "destroyed", None, time.time()))

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: note the error, then hand it on (the
        application's handler, or the default one, runs as before)."""
        try:
            exc = context.get("exception")
            if isinstance(exc, BaseException) and id(exc) not in self._crashed:
                self._note_crash(exc)
                msg = context.get("message")
                self._put(("loop_exc", str(msg)[:500] if isinstance(msg, str) else None, exc, time.time()))
        except Exception:
            self._hook_failed()
        prev = self._prev_handler
        if prev is not None:
            prev(loop, context)
        else:
            loop.default_exception_handler(context)

    def _make_record(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        """The log-record factory (chained): an error logged with its exception
        on the host loop -- a framework reporting a failed request handler,
        say -- becomes a crash report under the task that logged it. Logging
        itself is unchanged."""
        record: logging.LogRecord = self._prev_record_factory(*args, **kwargs)
        if record.levelno >= logging.ERROR and record.exc_info and self._on:
            try:
                self._logged(record)
            except Exception:
                self._hook_failed()
        return record

    def _logged(self, record: logging.LogRecord) -> None:
        try:
            if asyncio.get_running_loop() is not self.loop:
                return
        except RuntimeError:
            return
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, BaseException) or id(exc) in self._crashed:
            return
        self._note_crash(exc)
        task = asyncio.current_task(self.loop)
        trec = self._rec_of(task) if task is not None else None
        msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        self._put(("logged", trec, exc, f"{record.name}: {msg[:200]}", time.time()))

    # -- agent side: events --------------------------------------------------------------------

    def _ag(self) -> Agent:
        assert self.agent is not None, "the source is not attached"
        return self.agent

    def meta(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "started_at": self.started_at,
            "process_count": self.count(),
            "loop": ins.short_type(self.loop),
        }

    def count(self) -> int:
        return len(self.live)

    def encode(self, ev: Any) -> dict[str, Any] | None:
        kind = ev[0]
        if kind == "spawn":
            rec: TaskRec = ev[1]
            if rec.sup is None:  # else placed by a snapshot: sessions attached before it are told now
                self._place(rec)
            rec.spawned = time.monotonic()
            self._fresh.append(rec)
            return self._spawn_dict(rec)
        if kind == "exit":
            return self._exit(ev[1], ev[2], ev[3], ev[4], publish=True)
        if kind == "loop_exc":
            return self._loop_exception(ev[1], ev[2], ev[3], publish=True)
        if kind == "logged":
            return self._loop_exception(ev[3], ev[2], ev[4], publish=True, task=ev[1])
        if kind == "loop":
            return self._loop_changed(ev[1])
        return None

    def account(self, ev: Any) -> None:
        kind = ev[0]
        if kind == "exit":
            self._exit(ev[1], ev[2], ev[3], ev[4], publish=False)
        elif kind == "loop_exc":
            self._loop_exception(ev[1], ev[2], ev[3], publish=False)
        elif kind == "logged":
            self._loop_exception(ev[3], ev[2], ev[4], publish=False, task=ev[1])
        elif kind == "loop":
            self._loop_changed(ev[1], publish=False)

    def _publish(self, d: dict[str, Any]) -> None:
        self._ag()._publish(d)

    def _place(self, rec: TaskRec) -> None:
        """Find the task's scope and supervisor (idempotent; announces a new scope)."""
        if rec.sup is not None:
            return
        task = rec.ref()
        scope = self._scope_of(task, rec) if task is not None else None
        if scope is not None:
            rec.scope = scope
            scope.children += 1
            rec.sup = scope.key
        elif rec.parent is not None and rec.parent in self.shown:
            rec.sup = rec.parent
        else:
            rec.sup = rec.root
        if task is not None:
            rec.name = _task_name(task)  # it may have been renamed since
        self.shown[rec.key] = (rec.sup, rec.name)

    def _scope_of(self, task: asyncio.Task[Any], rec: TaskRec) -> ScopeRec | None:
        try:
            cbs = task._callbacks
        except Exception:
            return None
        for item in list(cbs or ()):
            cb = item[0] if isinstance(item, tuple) else item
            owner = getattr(cb, "__self__", None)
            if isinstance(owner, asyncio.TaskGroup):
                parent = getattr(owner, "_parent_task", None)
                prec = self._rec_of(parent) if isinstance(parent, asyncio.Task) else None
                return self._scope(owner, "taskgroup", prec.key if prec is not None else rec.parent)
            if getattr(cb, "__qualname__", None) == _GATHER_CB:
                for cell in getattr(cb, "__closure__", None) or ():
                    try:
                        v = cell.cell_contents
                    except ValueError:
                        continue
                    if isinstance(v, asyncio.Future) and type(v).__name__ == "_GatheringFuture":
                        return self._scope(v, "gather", rec.parent)
        return None

    def _scope(self, obj: object, kind: str, parent: str | None) -> ScopeRec:
        s = self.scopes.get(id(obj))
        if s is not None and s.ref() is obj:
            return s
        sup = parent if parent is not None and parent in self.shown else self.root_key
        s = ScopeRec(self._key(), kind, obj, sup, parent, self.root_key)
        self.scopes[id(obj)] = s
        self.shown[s.key] = (sup, kind)
        self._publish(
            {
                "ev": "spawn",
                "pid": s.key,
                "name": None,
                "label": kind,
                "parent": parent,
                "time": s.created,
                **_meta(sup, kind),
            }
        )
        return s

    def _spawn_dict(self, rec: TaskRec) -> dict[str, Any]:
        return {
            "ev": "spawn",
            "pid": rec.key,
            "name": rec.name,
            "label": rec.coro,
            "parent": rec.parent,
            "time": rec.created,
            **_meta(rec.sup, "task"),
            "coro": rec.coro,
            "created_at": _where(rec.where),
            "origin": rec.origin,
        }

    def _exit(
        self, rec: TaskRec, state: str, exc: BaseException | None, when: float, *, publish: bool
    ) -> dict[str, Any] | None:
        ag = self._ag()
        placed = rec.sup is not None
        report = None
        if exc is not None:
            if not publish:  # else counted by Agent._publish
                ag.crashes += 1
            report = self._report(rec, exc, when)
            ag.crash_log.ring.append(report)
            ag.crash_log.total += 1
        self.shown.pop(rec.key, None)
        scope = rec.scope
        if scope is not None:
            scope.children -= 1
            if scope.children <= 0 and _scope_over(scope):
                self._close_scope(scope, publish)
        if not (publish and placed):
            return None
        reason = {"done": "normal", "cancelled": "cancelled", "destroyed": "destroyed while pending"}.get(state)
        return {
            "ev": "exit",
            "pid": rec.key,
            "name": rec.name,
            "label": rec.coro,
            "reason": report["reason"] if report is not None else reason,
            "reason_kind": "exception" if exc is not None else ("normal" if state == "done" else "shutdown"),
            "exception": type(exc).__name__ if exc is not None else None,
            "traceback": report["traceback"] if report is not None else None,
            "time": when,
            "report": report,
            "state": state,
        }

    def _close_scope(self, scope: ScopeRec, publish: bool) -> None:
        s = self.scopes.get(id(scope.ref()))
        if s is scope:
            del self.scopes[id(scope.ref())]
        else:
            for k, v in list(self.scopes.items()):
                if v is scope:
                    del self.scopes[k]
        self.shown.pop(scope.key, None)
        if publish:
            self._publish(
                {
                    "ev": "exit",
                    "pid": scope.key,
                    "name": None,
                    "label": scope.kind,
                    "reason": "normal",
                    "reason_kind": "normal",
                    "exception": None,
                    "traceback": None,
                    "time": time.time(),
                    "report": None,
                }
            )

    def _ancestry(self, key: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        k: str | None = key
        while k is not None and len(out) < 64:
            ent = self.shown.get(k)
            out.append({"pid": k, "name": ent[1] if ent else None})
            k = ent[0] if ent else None
        if out[-1]["pid"] != self.root_key:
            out.append({"pid": self.root_key, "name": "loop"})
        out.reverse()
        return out

    def _report(self, rec: TaskRec, exc: BaseException, when: float) -> dict[str, Any]:
        ag = self._ag()
        return ins.crash_report(
            exc,
            pid=rec.key,
            name=rec.name,
            label=rec.coro,
            when=when,
            kind="task",
            supervisor=rec.sup,
            ancestry=self._ancestry(rec.key),
            policy=ag.policy,
            extra={"coro": rec.coro, "created_at": _where(rec.where), "parent": rec.parent, "steps": rec.steps},
        )

    def _loop_exception(
        self, message: str | None, exc: BaseException, when: float, *, publish: bool, task: TaskRec | None = None
    ) -> dict[str, Any] | None:
        """An error seen outside a task's own end: one the loop's exception
        handler saw (a callback's, a protocol's: kind ``callback``, under the
        loop), or one logged with its exception on the loop (kind ``logged``,
        under the task that logged it). It becomes the crash of a short-lived
        node, so it is listed, grouped and kept like any crash."""
        ag = self._ag()
        if not publish:  # else counted by Agent._publish
            ag.crashes += 1
        key = self._key()
        kind = "callback" if task is None else "logged"
        sup = task.key if task is not None and task.key in self.shown else self.root_key
        label = (message or "exception in the event loop")[:120]
        report = ins.crash_report(
            exc,
            pid=key,
            name=None,
            label=label,
            when=when,
            kind=kind,
            supervisor=sup,
            ancestry=[*self._ancestry(sup), {"pid": key, "name": None}],
            policy=ag.policy,
            extra={"message_text": message, "task": None if task is None else task.key},
        )
        ag.crash_log.ring.append(report)
        ag.crash_log.total += 1
        if not publish:
            return None
        self._publish(
            {"ev": "spawn", "pid": key, "name": None, "label": label, "parent": None, "time": when} | _meta(sup, kind)
        )
        return {
            "ev": "exit",
            "pid": key,
            "name": None,
            "label": label,
            "reason": report["reason"],
            "reason_kind": "exception",
            "exception": type(exc).__name__,
            "traceback": report["traceback"],
            "time": when,
            "report": report,
        }

    def _loop_changed(self, old_root: str, *, publish: bool = True) -> dict[str, Any] | None:
        """The loop was replaced: what was left of the old one is gone."""
        for k, rec in list(self.live.items()):
            if rec.root == old_root:
                self.live.pop(k, None)
                self._exit(rec, "destroyed", None, time.time(), publish=publish)
        for s in list(self.scopes.values()):
            if s.root == old_root:
                self._close_scope(s, publish)
        self.shown.pop(old_root, None)
        if not publish:
            return None
        now = time.time()
        self._publish(
            {
                "ev": "exit",
                "pid": old_root,
                "name": "loop",
                "label": "loop closed",
                "reason": "normal",
                "reason_kind": "normal",
                "exception": None,
                "traceback": None,
                "time": now,
                "report": None,
            }
        )
        self.shown[self.root_key] = (None, "loop")
        return {
            "ev": "spawn",
            "pid": self.root_key,
            "name": "loop",
            "label": self._loop_label(),
            "parent": None,
            "time": now,
            **_meta(None, "loop"),
        }

    def _loop_label(self) -> str:
        return ins.short_type(self.loop)

    def recheck(self) -> None:
        """Tasks spawned in the last second: their scope may have come after
        the factory (a TaskGroup adds its callback once the task exists)."""
        now = time.monotonic()
        fresh = self._fresh
        while fresh and (fresh[0].spawned < now - RECHECK_S or len(fresh) > 512):
            fresh.popleft()
        for rec in fresh:
            if rec.scope is not None or rec.key not in self.shown:
                continue
            task = rec.ref()
            if task is None:
                continue
            scope = self._scope_of(task, rec)
            if scope is not None:
                rec.scope = scope
                scope.children += 1
                rec.sup = scope.key
                self.shown[rec.key] = (rec.sup, rec.name)
                self._publish(
                    {"ev": "update", "pid": rec.key, "name": rec.name, "label": rec.coro, **_meta(rec.sup, "task")}
                )

    # -- agent side: snapshots and samples ---------------------------------------------------------

    def units(self) -> list[Any]:
        recs = list(self.live.values())
        for rec in recs:
            if rec.sup is None:
                self._place(rec)
        return [self.root_key, *list(self.scopes.values()), *recs]

    def records(self, units: list[Any]) -> list[dict[str, Any]]:
        cur = _current(self.loop)
        out = []
        for u in units:
            if isinstance(u, str):
                self.shown.setdefault(u, (None, "loop"))
                out.append(_record(u, "loop", self._loop_label(), None, None, "running", self.started_at, "loop"))
            elif isinstance(u, ScopeRec):
                out.append(_record(u.key, None, u.kind, u.sup, u.parent, "waiting", u.created, u.kind))
            else:
                task = u.ref()
                if task is None or u.sup is None:
                    continue
                r = _record(u.key, u.name, u.coro, u.sup, u.parent, _status(task, cur), u.created, "task")
                r.update(self._task_fields(u, task))
                out.append(r)
        return out

    def _task_fields(self, rec: TaskRec, task: asyncio.Task[Any]) -> dict[str, Any]:
        return {
            "handled": rec.steps,
            "handler_time": round(rec.time_s, 6),
            "coro": rec.coro,
            "created_at": _where(rec.where),
            "origin": rec.origin,
            "state": _state(task),
            "cancelling": _cancelling(task),
        }

    def scan(self) -> tuple[list[list[Any]], int]:
        cur = _current(self.loop)
        rows: list[list[Any]] = []
        steps = 0
        gone = []
        for rec in list(self.live.values()):
            task = rec.ref()
            if task is None:
                gone.append(rec)
                continue
            if rec.sup is None:
                continue
            fut = getattr(task, "_fut_waiter", None)
            try:
                fr = task.get_coro().cr_frame  # type: ignore[union-attr]
                pos = (id(fut), fr.f_lasti if fr is not None else -1)
            except Exception:
                pos = (id(fut), -1)
            if rec.pos is not None and pos != rec.pos:
                rec.steps += 1
                steps += 1
            rec.pos = pos
            row = [rec.key, 0, 0, 0, rec.steps, round(rec.time_s, 6), _status(task, cur), None]
            if row != rec.row:
                rec.row = row
                rows.append(row)
        for rec in gone:  # collected while pending: asyncio warns "Task was destroyed but it is pending"
            for k, v in list(self.live.items()):
                if v is rec:
                    self.live.pop(k, None)
                    self.finished_total += 1
            d = self._exit(rec, "destroyed", None, time.time(), publish=True)
            if d is not None:
                self._publish(d)
        for s in list(self.scopes.values()):
            if s.children <= 0 and _scope_over(s):
                self._close_scope(s, True)
        self._maybe_rescan()
        return rows, steps

    def _maybe_rescan(self) -> None:
        """If the application replaced our task factory, find its new tasks
        every 2 s from the host loop (their creator and creation line are then unknown)."""
        loop = self.loop
        if loop.is_closed() or not loop.is_running():
            return
        if loop.get_task_factory() is self._factory:
            return
        self.factory_replaced = True
        now = time.monotonic()
        if now - self._rescan_at < 2.0:
            return
        self._rescan_at = now
        try:
            loop.call_soon_threadsafe(self._adopt_all, loop)
        except RuntimeError:
            pass

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        dt = max(now - self._rate_at, 1e-3)
        c0, f0 = self._rate_counts
        c, f = self.created_total, self.finished_total
        self._rate_at, self._rate_counts = now, (c, f)
        return {
            "node_kind": "asyncio",
            "tasks": len(self.live),
            "scopes": len(self.scopes),
            "tasks_created_total": c,
            "tasks_finished_total": f,
            "tasks_created_per_s": round((c - c0) / dt, 1),
            "tasks_finished_per_s": round((f - f0) / dt, 1),
            "hook_errors": self.hook_errors,
            "factory_replaced": self.factory_replaced,
        }

    def owner(self, task: asyncio.Task[Any] | None) -> tuple[str | None, str | None]:
        if task is None:
            return None, None
        rec = self._rec_of(task)
        if rec is None:
            return None, _task_name(task)
        return rec.key, rec.name or rec.coro

    # -- commands ------------------------------------------------------------------------------------

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
        rec["memory"] = None
        rec["state_value"] = None
        return rec

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


def _site(frame: Any, origin: str) -> tuple[tuple[str, int, str] | None, str]:
    """The first frame outside asyncio and the agent, walking up from the factory's caller."""
    f = frame
    threadsafe = False
    for _ in range(16):
        if f is None:
            break
        code = f.f_code
        if code is _THREADSAFE_CB:
            threadsafe = True
        elif code is _HANDLE_RUN:
            break  # created from a loop callback with no application frame on the way
        elif not code.co_filename.startswith(_SKIP_DIRS):
            return (code.co_filename, f.f_lineno, code.co_qualname), origin
        f = f.f_back
    return None, "threadsafe" if threadsafe else ("callback" if origin == "task" else origin)


def _where(w: tuple[str, int, str] | None) -> str | None:
    return None if w is None else f"{w[0]}:{w[1]} in {w[2]}"


def _task_name(task: asyncio.Task[Any]) -> str | None:
    try:
        return str(task.get_name())[:200]
    except Exception:
        return None


def _current(loop: asyncio.AbstractEventLoop) -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task(loop)
    except Exception:
        return None


def _status(task: asyncio.Task[Any], cur: asyncio.Task[Any] | None) -> str:
    return "running" if task is cur else "waiting"


def _state(task: asyncio.Task[Any]) -> str:
    if not task.done():
        return "pending"
    if task.cancelled():
        return "cancelled"
    return "failed" if getattr(task, "_exception", None) is not None else "done"


def _cancelling(task: asyncio.Task[Any]) -> int:
    try:
        return int(task.cancelling())
    except Exception:
        return 0


def _scope_over(s: ScopeRec) -> bool:
    obj = s.ref()
    if obj is None:
        return True
    if s.kind == "gather":
        return bool(obj.done())  # type: ignore[attr-defined]
    parent = getattr(obj, "_parent_task", None)
    if isinstance(parent, asyncio.Task) and parent.done():
        return True
    return bool(getattr(obj, "_exiting", False)) and not getattr(obj, "_tasks", None)


def _meta(sup: str | None, kind: str) -> dict[str, Any]:
    return {"supervisor": sup, "child_id": None, "kind": kind, "restarts": 0, "trap_exit": None, "budget": None}


def _record(
    key: str,
    name: str | None,
    label: str | None,
    sup: str | None,
    parent: str | None,
    status: str,
    started: float,
    kind: str,
) -> dict[str, Any]:
    return {
        "pid": key,
        "name": name,
        "label": label,
        "kind": kind,
        "status": status,
        "supervisor": sup,
        "parent": parent,
        "child_id": None,
        "restarts": 0,
        "mailbox": 0,
        "msgs_in": 0,
        "msgs_out": 0,
        "handled": 0,
        "handler_time": 0.0,
        "links": [],
        "monitors": [],
        "trap_exit": None,
        "started_at": started,
        "budget": None,
    }

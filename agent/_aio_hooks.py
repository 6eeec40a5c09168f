"""The asyncio source's host side (a mixin of
:class:`agent._aio_source.AsyncioSource`): the task factory, the done
callback, the loop's exception handler and the log-record factory, all
chained with what the application had set; and following a new loop.

These run on the host loop's thread and only note and queue: a tuple per
event into the agent's collector. A hook that raises is counted
(``hook_errors``; the first few are logged) and the host goes on.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
import weakref
from typing import TYPE_CHECKING, Any

from . import _aio_inspect as ins
from ._aio_records import _CREATE_TASK, TaskRec, _coro_of, _site, _task_name

if TYPE_CHECKING:
    from ._agent import Agent

log = logging.getLogger("agent")

ADOPT_CHUNK = 2000
"""Tasks adopted per loop step (see ``HostHooks._adopt_some``)."""


class HostHooks:
    """Needs the source's loop, agent, records and counters."""

    loop: asyncio.AbstractEventLoop
    agent: Agent | None
    live: dict[int, TaskRec]
    root_key: str
    _crashed: dict[int, None]
    _prev_factory: Any
    _prev_handler: Any
    _prev_record_factory: Any
    _on: bool
    created_total: int
    finished_total: int
    hook_errors: int
    _done_cb: Any
    _done_ctx: contextvars.Context
    _skip_unseen: bool
    lazy_delay: float

    def _key(self) -> str:
        raise NotImplementedError

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
        if prev != self._factory:  # (bound methods: equal, never identical)
            self._prev_factory = prev
            loop.set_task_factory(self._factory)
        handler = loop.get_exception_handler()
        if handler != self._on_exception:
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
        pending = [t for t in tasks if self._rec_of(t) is None]
        if not pending:  # the usual case: the waiters of 100,000 tasks are not read for nothing
            return
        awaited_by: dict[int, asyncio.Task[Any]] = {}
        for t in tasks:
            fut = ins.task_waiter(t)
            if isinstance(fut, asyncio.Task):
                awaited_by[id(fut)] = t
            elif fut is not None and type(fut).__name__ == "_GatheringFuture":
                for c in getattr(fut, "_children", ()) or ():
                    awaited_by[id(c)] = t
        for k, parent in ins.awaiters(pending).items():  # 3.14+ only (untested here)
            awaited_by.setdefault(k, parent)
        # parents first, so that children find them
        pending.sort(key=lambda t: id(t) in awaited_by)
        self._adopt_some(loop, pending, awaited_by, 0)

    def _adopt_some(
        self, loop: asyncio.AbstractEventLoop, pending: list[Any], awaited_by: dict[int, Any], start: int
    ) -> None:
        """Adopt ``ADOPT_CHUNK`` tasks, and the rest in later loop steps (a loop of
        100,000 tasks is not held for the whole adoption)."""
        if not self._on or loop is not self.loop:
            return
        for t in pending[start : start + ADOPT_CHUNK]:
            if not t.done():
                self._track(t, None, "adopted", awaited_by.get(id(t)))
        if start + ADOPT_CHUNK < len(pending):
            loop.call_soon(self._adopt_some, loop, pending, awaited_by, start + ADOPT_CHUNK)

    def detach(self) -> None:
        self._on = False
        self.live.clear()  # the done callback left on live tasks finds nothing from now on
        if logging.getLogRecordFactory() == self._make_record:
            logging.setLogRecordFactory(self._prev_record_factory)
        loop = self.loop
        if loop.is_closed():
            return

        def undo() -> None:
            if loop.get_task_factory() == self._factory:
                loop.set_task_factory(self._prev_factory)
            if loop.get_exception_handler() == self._on_exception:
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
        if not old.is_closed() and old.get_task_factory() == self._factory:
            old.set_task_factory(self._prev_factory)
        self.loop = loop
        self._done_ctx = contextvars.Context()  # (a context is entered by one thread at a time)
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
                # the frame to walk up from: the caller of asyncio.create_task when
                # that called loop.create_task (the usual case: a frame object fewer
                # to make: ~3,900 instructions a task, callgrind), else the factory's caller
                try:
                    up = sys._getframe(2)
                except ValueError:
                    up = None
                frame = up.f_back if up is not None and up.f_code is _CREATE_TASK else sys._getframe(1)
                rec = self._track(task, frame, "task", None)
                if rec is not None and rec.coro is None and task.done():
                    rec.coro = ins.coro_name(coro)  # eager, done in its first step: its coroutine is dropped
            except Exception:
                self._hook_failed()
        return task

    def _rec_of(self, task: asyncio.Task[Any]) -> TaskRec | None:
        rec = self.live.get(id(task))
        return rec if rec is not None and rec() is task else None

    def _track(
        self, task: asyncio.Task[Any], frame: Any, origin: str, parent: asyncio.Task[Any] | None
    ) -> TaskRec | None:
        """Note a task (the factory's, or one adopted): one record, one done
        callback, one lazy event. The line that created it is kept as a code
        object and an offset, read only if it is drawn."""
        tid = id(task)
        live = self.live
        rec = live.get(tid)
        if rec is not None:
            if rec() is task:  # met first as a parent (an eager task's child): complete it
                if rec.wcode is None and rec._where is None and frame is not None:
                    rec.wcode, rec.wlasti, rec.origin, group = _site(frame, rec.origin)
                    if group is not None:
                        rec.group = weakref.ref(group)
                return rec
            self._gone(rec, tid)  # a collected task's id, reused
        if origin == "task":
            parent = asyncio.current_task(self.loop)
        elif task.done():
            return None  # (adopted)
        prec = None
        if parent is not None and parent is not task:
            prec = live.get(id(parent))
            if prec is None or prec() is not parent:
                prec = self._track(parent, None, "adopted", None)
        rec = TaskRec(task)
        rec.key, rec.root, rec.created = self._key(), self.root_key, time.time()
        rec.prec, rec.parent, rec.origin = prec, prec.key if prec is not None else None, origin
        if frame is not None:
            rec.wcode, rec.wlasti, rec.origin, group = _site(frame, origin)
            if group is not None:
                rec.group = weakref.ref(group)
        rec.lazy = origin == "task"
        live[tid] = rec
        self.created_total += 1
        # run in a context of the agent's (one per loop): no copy of the current one per task
        task.add_done_callback(self._done_cb, context=self._done_ctx)
        ag = self.agent
        if ag is not None:
            ag.collector.put_lazy(("spawn", rec), self.lazy_delay)
        return rec

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        tid = id(task)
        live = self.live
        rec = live.get(tid)
        if rec is None or rec() is not task:
            return
        del live[tid]
        self.finished_total += 1
        try:
            if task.cancelled():
                state, exc = "cancelled", None
            else:
                # the attribute, not task.exception(): that would mark the
                # exception retrieved and silence asyncio's own warning
                exc = ins.task_exception(task)
                if exc is None:
                    state = "done"
                else:
                    state = "failed"
                    self._note_crash(exc)
                    self._flush_group(rec, task)
            if rec.sup is not None or exc is not None or rec.flush:
                # drawn, or about to be with its crash or its group's: its final name
                # (create_task(name=...) names a task after the factory)
                rec.name = _task_name(task)
                if rec.coro is None:
                    rec.coro = _coro_of(task)
            ag = self.agent
            if ag is None:
                return
            if exc is None:
                if rec.lazy and rec.sup is None and not rec.flush and self._skip_unseen:
                    # ended before the agent read its spawn: that will find it done and
                    # not draw it (it clears ``lazy`` before it looks), so nothing to tell.
                    # The rule that makes it safe: the agent draws a task whose spawn it
                    # has not read only if it failed or is flagged (``flush``), never this one
                    return
                ag.collector.put_lazy(("exit", rec, state, exc, time.time()), self.lazy_delay)
            else:
                ag.collector.put(("exit", rec, state, exc, time.time()))
        except Exception:
            self._hook_failed()

    def _flush_group(self, rec: TaskRec, task: asyncio.Task[Any]) -> None:
        """A task failed (host loop, in its done callback, before its TaskGroup's
        own callback cancels the siblings): it and the other members of its
        TaskGroup or gather are drawn even if they end before the agent looks,
        and hold the group until then (it may be gone by the time the agent
        draws them)."""
        rec.flush = True
        g = rec.group
        obj = g() if type(g) is weakref.ReferenceType else g
        members: Any = None
        if obj is not None:
            members = getattr(obj, "_tasks", None)
        else:
            parent = rec.prec() if rec.prec is not None else None
            fut = ins.task_waiter(parent) if parent is not None else None
            if fut is not None and type(fut).__name__ == "_GatheringFuture":
                kids = getattr(fut, "_children", None) or ()
                if any(k is task for k in kids):
                    obj, members = fut, kids
        if obj is None:
            return
        # the creator and the group's owner may be drawn with it (Scopes._group_scope):
        # their ends are told even if they end before the agent looks
        owners = [rec.prec, self._rec_of(getattr(obj, "_parent_task", None) or task)]
        for o in owners:
            if o is not None:
                o.flush = True
        rec.group = obj
        for t in list(members or ()):
            r = self._rec_of(t) if isinstance(t, asyncio.Task) else None
            if r is not None and r is not rec:
                r.flush, r.group = True, obj

    def _note_crash(self, exc: BaseException) -> None:
        crashed = self._crashed
        crashed[id(exc)] = None
        if len(crashed) > 1000:
            del crashed[next(iter(crashed))]

    def _gone(self, rec: TaskRec, tid: int) -> None:
        """A task collected while pending (asyncio warns "Task was destroyed but
        it is pending"), met as its id ``tid`` is reused: its record is dropped
        (by that key: no walk over the live tasks on the host's thread)."""
        if self.live.get(tid) is rec:
            del self.live[tid]
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
        if trec is None and task is not None:
            # a task no factory saw (on 3.12+ ``asyncio.Task(..., eager_start=True)``
            # built by a library, as aiohttp does): adopt it to hang the crash on
            trec = self._track(task, None, "adopted", None)
        if trec is not None:
            trec.flush = True  # drawn to carry the crash, even if it ends before the agent looks
        if trec is not None and task is not None and trec.sup is None:
            trec.name, trec.coro = _task_name(task), _coro_of(task)  # it may be gone when the agent draws it
        msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        self._put(("logged", trec, exc, f"{record.name}: {msg[:200]}", time.time()))

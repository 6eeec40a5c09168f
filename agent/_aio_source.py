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
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from . import _aio_inspect as ins
from ._aio_commands import TaskCommands
from ._aio_hooks import HostHooks
from ._aio_records import (
    ScopeRec,
    TaskRec,
    _cancelling,
    _coro_of,
    _current,
    _meta,
    _record,
    _scope_over,
    _state,
    _status,
    _task_name,
    _where,
)
from ._source import Source

if TYPE_CHECKING:
    from ._agent import Agent

_GATHER_CB = "gather.<locals>._done_callback"
LAZY_DELAY = 0.1
"""A task's start and ordinary end reach the agent at most this late (its
crash at once). The agent's heartbeat drains them first, most of the time,
and the hand-off then finds nothing to wait for: a stream of tasks adds no
GIL hand-overs to the host's. A task shorter than about this is counted, not
drawn (see ``encode``)."""
RECHECK_S = 1.0
"""How long after its spawn a task's scope is looked for again (a TaskGroup
adds its done callback right after the factory returns)."""


class AsyncioSource(HostHooks, TaskCommands, Source):
    """Observes the tasks of one asyncio event loop (and, with :meth:`retarget`,
    of the loops that follow it in the same process)."""

    kind = "asyncio"
    commands = frozenset({"ping", "snapshot", "info", "inspect", "processes", "cancel"})

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.agent: Agent | None = None
        self.started_at = time.time()
        self.node_id = 0
        """The pids' first number, as for an actors node (this process's id is in ``os_pid``)."""
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
        self._scanned_at = time.monotonic()
        self._done_cb = self._on_done
        """The one bound method given to every task (recognised by identity)."""
        self.lazy_delay = LAZY_DELAY

    def _key(self) -> str:
        return f"<0.{next(self._ids)}.0>"

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
                task = rec.ref()
                if task is None or task.done():
                    # it ended before the agent looked (within LAZY_DELAY): counted in the
                    # node's figures, drawn only if it failed (see _exit)
                    return None
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
            if rec.coro is None:
                rec.coro = _coro_of(task)
        self.shown[rec.key] = (rec.sup, rec.name)

    def _scope_of(self, task: asyncio.Task[Any], rec: TaskRec) -> ScopeRec | None:
        try:
            cbs = ins.task_callbacks(task)
        except Exception:
            return None
        if not cbs or (len(cbs) == 1 and isinstance(cbs[0], tuple) and cbs[0][0] is self._done_cb):
            return None  # only the agent's own callback
        for item in list(cbs):
            cb = item[0] if isinstance(item, tuple) else item
            if cb is self._done_cb:
                continue
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
        rec.ended = True
        if publish and rec.sup is None and exc is not None:
            # a task that failed before the agent drew it: drawn now, to carry its crash
            self._place(rec)
            self._publish(self._spawn_dict(rec))
        placed = rec.sup is not None
        report = None
        if exc is not None:
            if not publish:  # else counted by Agent._publish
                ag.crashes += 1
            report = self._report(rec, exc, when)
            ag.crash_log.ring.append(cast(Any, report))
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
        if publish and task is not None and task.sup is None and not task.ended:
            # the task that logged it was not drawn yet (it is short): draw it, to hang the crash on
            self._place(task)
            self._publish(self._spawn_dict(task))
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
        ag.crash_log.ring.append(cast(Any, report))
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
                    {
                        "ev": "update",
                        "pid": rec.key,
                        "name": rec.name,
                        "label": rec.coro,
                        **_meta(rec.sup, "task"),
                        "time": time.time(),
                    }
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
                out.append(
                    {
                        "pid": u.key,
                        "name": u.name,
                        "label": u.coro,
                        "kind": "task",
                        "status": "running" if task is cur else "waiting",
                        "supervisor": u.sup,
                        "parent": u.parent,
                        # the actor-only fields (mailbox, links, budget...) are left
                        # out: their defaults (messages.ProcessRecord); ~40 % fewer bytes
                        "handled": u.steps,
                        "handler_time": u.time_s,
                        "started_at": u.created,
                        "created_at": _where(u.where),
                        "origin": u.origin,
                        "task_state": _state(task),
                        "cancelling": _cancelling(task),
                    }
                )
        return out

    def _task_fields(self, rec: TaskRec, task: asyncio.Task[Any]) -> dict[str, Any]:
        return {
            "handled": rec.steps,
            "handler_time": rec.time_s,
            "coro": rec.coro,
            "created_at": _where(rec.where),
            "origin": rec.origin,
            "task_state": _state(task),
            "cancelling": _cancelling(task),
        }

    def scan(self) -> tuple[list[list[Any]], int]:
        cur = _current(self.loop)
        now = time.monotonic()
        period, self._scanned_at = now - self._scanned_at, now
        if cur is not None:
            # the host is in the middle of a step of ``cur`` (the agent runs
            # while it holds the GIL only when the step outlasts the switch
            # interval): a sampling profiler's estimate of its time in steps
            crec = self._rec_of(cur)
            if crec is not None:
                crec.time_s = round(crec.time_s + min(period, 1.0), 3)
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
            fut = ins.task_waiter(task)
            try:
                fr = task.get_coro().cr_frame  # type: ignore[union-attr]
                pos = (id(fut), fr.f_lasti if fr is not None else -1)
            except Exception:
                pos = (id(fut), -1)
            if rec.pos is not None and pos != rec.pos:
                rec.steps += 1
                steps += 1
            rec.pos = pos
            row = [rec.key, 0, 0, 0, rec.steps, rec.time_s, _status(task, cur), None]
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
        if loop.get_task_factory() == self._factory:
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

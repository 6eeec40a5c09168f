"""The asyncio source: a plain event loop's tasks as a live tree.

What the host pays (its loop thread), per task: the task factory (chained
with whatever factory the application had set) notes the task, the task
current at its creation and the line that created it (a code object and an
offset, read as ``file:line`` only if the task is drawn), in one record that
is also the weak reference to the task; adds one done callback (run in a
context of the agent's: no copy of the current one); and queues a tuple for
the agent. The done callback queues another only if the agent has read the
first (a short task's ordinary end is only counted: ``TaskRec.lazy``), or
the task failed. Nothing is formatted or encoded on the host. A hook that
fails is counted (``hook_errors``) and the application's task is returned
untouched. (callgrind, 20,000 short tasks gathered 100 at a time: ~37,000
instructions a task on top of the loop's own ~38,000, hooks and the drain's
encoding together; it was ~58,000.)

What is shown (see ``docs/asyncio.md``):

* every task, under the structured scope that owns it, else the task that
  created it (while that task lives), else the loop. Scopes are found
  through what the task and the loop carry, never by patching (see
  ``agent/_aio_scopes.py``), and drawn as grouping nodes (kind
  ``taskgroup``, ``gather``, ``timeout``).
* tasks that existed before the agent attached, under the loop, or under
  the task that awaits them.
* per task: name, coroutine, state, creation site, age, cancellations
  requested; on ``inspect`` the await chain and what it waits on.

Threads: the factory, the done callback and the exception handler run on the
host loop; everything else on the agent's thread, reading tasks through weak
references (the agent never keeps a task alive; a failed member's group is
held until the agent has drawn it, see ``HostHooks._flush_group``).

The class is assembled from mixins, one concern each: ``HostHooks``
(``_aio_hooks.py``), ``TaskEvents`` (``_aio_events.py``), ``Scopes``
(``_aio_scopes.py``) and ``TaskCommands`` (``_aio_commands.py``); this
module keeps the state, snapshots and sampling.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import actors

from . import _aio_inspect as ins
from ._aio_commands import TaskCommands
from ._aio_events import TaskEvents
from ._aio_hooks import HostHooks
from ._aio_records import (
    ScopeRec,
    TaskRec,
    _cancelling,
    _current,
    _record,
    _scope_over,
    _state,
    _status,
    _task_name,
    _where,
)
from ._aio_scopes import Scopes
from ._source import Source

_SCOPE_KINDS = frozenset(("taskgroup", "gather", "timeout"))

if TYPE_CHECKING:
    from ._agent import Agent

DIRECT_TASKS = sys.version_info >= (3, 12)
"""From 3.12 a library may build an eager task with ``asyncio.Task(coro,
eager_start=True)`` (aiohttp does, for every connection and request): no task
factory sees it, so the source looks for such tasks every 2 s as it does for an
application factory set over its own."""


def _registered() -> int | None:
    """How many pending tasks asyncio holds, all loops together, on 3.12 and
    3.13 (a WeakSet there: its length costs nothing, where reading
    ``all_tasks`` of a loop of 100,000 tasks costs the host tens of ms); None
    on another Python (3.14 keeps native tasks elsewhere): then always look."""
    if sys.version_info[:2] not in ((3, 12), (3, 13)):
        return None
    try:
        return len(asyncio.tasks._scheduled_tasks)  # type: ignore[attr-defined]
    except Exception:
        return None


LAZY_DELAY = 0.1
"""A task's start and ordinary end reach the agent at most this late (its
crash at once). The agent's heartbeat drains them first, most of the time,
and the hand-off then finds nothing to wait for: a stream of tasks adds no
GIL hand-overs to the host's. A task shorter than about this is counted, not
drawn (see ``TaskEvents.encode``), unless it fails or a member of its
TaskGroup or gather does."""


class AsyncioSource(TaskEvents, Scopes, HostHooks, TaskCommands, Source):
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
        self.crashes_total = 0
        """Tasks ended by an exception and errors the loop saw, since the source started."""
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
        self._surplus = 0
        """On 3.12+: asyncio's pending tasks beyond the tracked ones at the last look."""
        self._scanned_at = time.monotonic()
        self._done_cb = self._on_done
        """The one bound method given to every task (recognised by identity)."""
        self._skip_unseen = type(self).encode is TaskEvents.encode and type(self).account is TaskEvents.account
        """Whether a short task's ordinary end may go untold (``HostHooks._on_done``):
        not for a subclass that reads spawns its own way (``agent.mixed``)."""
        self._done_ctx = contextvars.Context()
        """The context ``_done_cb`` runs in (empty; one per loop, see ``retarget``):
        giving it saves a copy of the current context for every task."""
        self.lazy_delay = LAZY_DELAY
        self._tmo_of: dict[str, list[ScopeRec]] = {}
        """Task key -> the timeout scopes drawn under it (agent thread)."""
        self._tmo_read_at = 0.0
        self._tmo_last = 0.0
        self._tmo_cost = 0.0
        self._tmo_wait: dict[str, list[tuple[Any, float, TaskRec]]] = {}
        self._made_scopes: list[ScopeRec] | None = None
        """While ``records`` places tasks: the scopes that placing them made."""
        self.on_node: Callable[[actors.Node], None] | None = None
        self._nodes_met: set[int] = set()

    def _key(self) -> str:
        return f"<0.{next(self._ids)}.0>"

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

    def _publish(self, d: dict[str, Any]) -> None:
        self._ag()._publish(d)

    def _loop_label(self) -> str:
        return ins.short_type(self.loop)

    # -- agent side: snapshots and samples ---------------------------------------------------------

    def units(self) -> list[Any]:
        """The loop, the scopes and the tasks; the tasks are placed chunk by
        chunk as their records are built (``records``), so that the first
        chunk of a snapshot of 100,000 tasks leaves before the last is placed."""
        return [self.root_key, *list(self.scopes.values()), *list(self.live.values())]

    def records(self, units: list[Any]) -> list[dict[str, Any]]:
        """The units' records; the tasks not placed yet are placed now, and the
        scopes that placing them announces come with them."""
        out: list[dict[str, Any]] = []
        made = self._made_scopes = []
        try:
            for u in units:
                if type(u) is TaskRec and u.sup is None and not u.ended:  # (ended: its exit was told, or not needed)
                    if u.lazy:
                        u.lazy = False  # first, as encode does: from here on the host tells its end
                        task = u()
                        if task is None or task.done():
                            continue  # ended before the agent looked: not drawn
                    self._place(u)
        finally:
            self._made_scopes = None
        if made:
            units = [*made, *units]
        cur = _current(self.loop)
        append = out.append
        told: set[int] = set()  # the scopes recorded in this call
        for u in units:
            if type(u) is TaskRec:  # (first: all but a few units are tasks)
                task = u()
                if task is None or u.sup is None:
                    continue
                if u.scope is not None and id(u.scope) not in told:
                    self._scope_records(u.scope, told, append)
                w = u._where if u.wcode is None else u.where
                append(
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
                        "created_at": None if w is None else f"{w[0]}:{w[1]} in {w[2]}",
                        "origin": u.origin,
                        "task_state": _state(task) if task.done() else "pending",
                        "cancelling": _cancelling(task),
                    }
                )
            elif isinstance(u, str):
                self.shown.setdefault(u, (None, "loop"))
                append(_record(u, "loop", self._loop_label(), None, None, "running", self.started_at, "loop"))
            elif isinstance(u, ScopeRec) and id(u) not in told:
                told.add(id(u))
                append(_record(u.key, None, u.kind, u.sup, u.parent, "waiting", u.created, u.kind))
        return out

    def _scope_records(self, s: ScopeRec, told: set[int], append: Callable[[dict[str, Any]], None]) -> None:
        """The records of a task's scope and of the scopes around it, if still
        open. A snapshot's later chunks are built while the agent goes on
        reading the host's events (between chunks), and a task placed then
        may stand in a scope made after the snapshot's units were taken:
        without its record here the task would come without its supervisor's
        node (and its edge to it). A scope recorded twice in one snapshot is
        harmless: the last record of a pid wins."""
        by_key: dict[str, ScopeRec] | None = None
        cur: ScopeRec | None = s
        while cur is not None and id(cur) not in told:
            told.add(id(cur))
            obj = cur.ref()
            if obj is None or self.scopes.get(id(obj)) is not cur:
                return  # closed meanwhile: its exit follows the snapshot
            append(_record(cur.key, None, cur.kind, cur.sup, cur.parent, "waiting", cur.created, cur.kind))
            above = self.shown.get(cur.sup)
            if above is None or above[1] not in _SCOPE_KINDS:
                return  # under the loop or a task (a scope is shown with its kind for a name)
            if by_key is None:
                by_key = {v.key: v for v in self.scopes.values()}
            cur = by_key.get(cur.sup)

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
            task = rec()
            if task is None:
                gone.append(rec)
                continue
            if rec.sup is None:
                continue
            fut = ins.task_waiter(task)
            try:
                fr = ins.task_coro(task).cr_frame
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
            if s.children <= 0 and s.kind != "timeout" and _scope_over(s):
                self._close_scope(s, True)
        self._read_timeouts()
        self._maybe_rescan()
        return rows, steps

    def _maybe_rescan(self) -> None:
        """Find the tasks no factory of ours saw, every 2 s at most, from the
        host loop (their creator and creation line are then unknown): if the
        application replaced our task factory, or on 3.12+ (``DIRECT_TASKS``)
        when asyncio holds more pending tasks beyond those tracked (all loops,
        the agent's own too) than at the last look."""
        loop = self.loop
        if loop.is_closed() or not loop.is_running():
            return
        reg = _registered()
        surplus = 0 if reg is None else reg - len(self.live)
        if loop.get_task_factory() == self._factory:
            if not DIRECT_TASKS:
                return
            if reg is not None and surplus <= self._surplus:
                self._surplus = surplus  # follow it down: what ends is not looked for
                return
        else:
            self.factory_replaced = True
        now = time.monotonic()
        if now - self._rescan_at < 2.0:
            return
        self._rescan_at = now
        self._surplus = surplus
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

"""The asyncio source's structured scopes (a mixin of
:class:`agent._aio_source.AsyncioSource`): where a task is drawn, and the
grouping nodes it is drawn under -- TaskGroups, gathers and
``asyncio.timeout()`` scopes. Agent thread only.

* A TaskGroup is known from the task's creation (the factory's frame walk
  meets ``TaskGroup.create_task``, whose ``self`` is the group), else from
  the group's bound ``_on_task_done`` among the task's done callbacks.
* A gather from its ``_done_callback`` among the child's done callbacks (the
  closure holds the gathering future); a gather's failed child, from the
  future its creator awaits.
* A timeout from the loop's timers (``agent/_aio_timeouts.py``): drawn under
  the task that entered it; tasks and scopes that task creates while the
  timeout is active are drawn inside it (read when the agent places them, at
  most ``LAZY_DELAY`` after their creation: a child created just before its
  creator enters a timeout may be drawn inside it, one created inside a
  timeout that ends within that delay beside it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import actors

from . import _aio_inspect as ins
from . import _aio_timeouts as tmos
from ._aio_records import ScopeRec, TaskRec, _coro_of, _meta, _scope_over, _task_name, timeout_state

log = logging.getLogger("agent")

_GATHER_CB = "gather.<locals>._done_callback"
_ACTORS_DIR = os.path.dirname(actors.__file__) + os.sep
RECHECK_S = 1.0
"""How long after its spawn a task's scope is looked for again (a TaskGroup
adds its done callback right after the factory returns)."""
TIMEOUT_SCAN_S = 0.25
"""The loop's timers are read for timeouts at most this often by the sampling
scan, and never more than 2 % of the agent's time (see ``_read_timeouts``)."""


def _group_obj(rec: TaskRec) -> Any:
    g = rec.group
    return g() if type(g) is weakref.ReferenceType else g


class Scopes:
    """Needs the source's records and publishing."""

    loop: asyncio.AbstractEventLoop
    live: dict[int, TaskRec]
    scopes: dict[int, ScopeRec]
    shown: dict[str, tuple[str | None, str | None]]
    root_key: str
    _fresh: deque[TaskRec]
    _done_cb: Any
    _tmo_of: dict[str, list[ScopeRec]]
    _tmo_read_at: float
    """When the timers were last read (wall clock)."""
    _tmo_last: float
    _tmo_cost: float
    on_node: Callable[[actors.Node], None] | None
    """Called (agent thread) with each actors node met running on the loop,
    once per node: a task whose done callback is an ``actors.Process`` runs
    that process (the launcher then shows the node too: ``agent/_bootstrap.py``)."""
    _nodes_met: set[int]
    _made_scopes: list[ScopeRec] | None
    _tmo_wait: dict[str, list[tuple[Any, float, TaskRec]]]
    """Task key -> timeouts found at the last reading while that task was not
    drawn yet (weak references; opened when the task is placed)."""

    if TYPE_CHECKING:

        def _key(self) -> str: ...

        def _publish(self, d: dict[str, Any]) -> None: ...

        def _rec_of(self, task: asyncio.Task[Any]) -> TaskRec | None: ...

        def _spawn_dict(self, rec: TaskRec) -> dict[str, Any]: ...

    # -- placing a task ------------------------------------------------------------------------

    def _place(self, rec: TaskRec) -> None:
        """Find the task's scope and supervisor (idempotent; announces a new scope)."""
        if rec.sup is not None:
            return
        task = rec()
        if task is not None and rec.group is None and ins.only_callback(task, self._done_cb):
            scope = None  # the usual case (a snapshot of 100,000 tasks): nothing to look for but a timeout
        else:
            scope = self._scope_for(rec, task)
        if scope is None and rec.parent is not None and self._may_have_timeout(rec.created):
            scope = self._timeout_around(rec.parent, rec.created)
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
        if self._tmo_wait:
            self._open_waiting(rec.key)

    def _draw_early(self, rec: TaskRec | None) -> None:
        """Publish a task's spawn now, if it is not drawn yet: it ended before
        the agent looked, and carries a crash or a failed sibling's
        cancellation (or it is the creator of such a task)."""
        if rec is None or rec.spawned or rec.ended:
            return
        self._place(rec)
        rec.spawned = time.monotonic()
        self._publish(self._spawn_dict(rec))

    def _scope_for(self, rec: TaskRec, task: asyncio.Task[Any] | None) -> ScopeRec | None:
        obj = _group_obj(rec)
        if isinstance(obj, asyncio.TaskGroup):
            return self._group_scope(obj, rec)
        if isinstance(obj, asyncio.Future):
            return self._scope(obj, "gather", rec.parent, rec)
        return self._scope_of(task, rec) if task is not None else None

    def _group_scope(self, group: asyncio.TaskGroup, rec: TaskRec) -> ScopeRec:
        parent = getattr(group, "_parent_task", None)
        prec = rec.prec if rec.prec is not None and rec.prec() is parent else None
        if prec is None and isinstance(parent, asyncio.Task):
            prec = self._rec_of(parent)
        if rec.flush and id(group) not in self.scopes:
            self._draw_early(prec)  # the group's owner ended quickly too: drawn, to hold the group
        return self._scope(group, "taskgroup", prec.key if prec is not None else rec.parent, rec)

    def _scope_of(self, task: asyncio.Task[Any], rec: TaskRec) -> ScopeRec | None:
        """The TaskGroup or gather whose done callback the task carries."""
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
            if type(cb) is actors.Process:
                if self.on_node is not None:
                    self._met_node(cb.node)
                return None
            owner = getattr(cb, "__self__", None)
            if isinstance(owner, asyncio.TaskGroup):
                return self._group_scope(owner, rec)
            if getattr(cb, "__qualname__", None) == _GATHER_CB:
                for cell in getattr(cb, "__closure__", None) or ():
                    try:
                        v = cell.cell_contents
                    except ValueError:
                        continue
                    if isinstance(v, asyncio.Future) and type(v).__name__ == "_GatheringFuture":
                        return self._scope(v, "gather", rec.parent, rec)
        return None

    def _look_for_node(self, rec: TaskRec) -> None:
        """A task created from inside the actors runtime (nobody attached, so
        it is not placed): is it a process of a node? Only while ``on_node`` is set."""
        code = rec.wcode  # (the file only: the line is not needed)
        w = code.co_filename if code is not None else (rec._where[0] if rec._where is not None else None)
        if w is None or not w.startswith(_ACTORS_DIR):
            return
        task = rec()
        for item in ins.task_callbacks(task) if task is not None else ():
            cb = item[0] if isinstance(item, tuple) else item
            if type(cb) is actors.Process:
                self._met_node(cb.node)
                return

    def _met_node(self, node: actors.Node) -> None:
        if id(node) in self._nodes_met or self.on_node is None:
            return
        self._nodes_met.add(id(node))
        try:
            self.on_node(node)
        except Exception:
            log.exception("agent: on_node failed")

    def _scope(self, obj: object, kind: str, parent: str | None, rec: TaskRec | None = None) -> ScopeRec:
        s = self.scopes.get(id(obj))
        if s is not None and s.ref() is obj:
            return s
        tmo = self._timeout_around(parent, rec.created if rec is not None else time.time())
        sup = tmo.key if tmo is not None else (parent if parent is not None and parent in self.shown else self.root_key)
        s = ScopeRec(self._key(), kind, obj, sup, parent, self.root_key)
        self.scopes[id(obj)] = s
        if self._made_scopes is not None:
            self._made_scopes.append(s)
        self.shown[s.key] = (sup, kind)
        self._publish(
            {"ev": "spawn", "pid": s.key, "name": None, "label": kind, "parent": parent, "time": s.created}
            | _meta(sup, kind)
        )
        return s

    def _close_scope(self, scope: ScopeRec, publish: bool, reason: str = "normal") -> None:
        s = self.scopes.get(id(scope.ref()))
        if s is scope:
            del self.scopes[id(scope.ref())]
        else:
            for k, v in list(self.scopes.items()):
                if v is scope:
                    del self.scopes[k]
        self.shown.pop(scope.key, None)
        if scope.kind == "timeout" and scope.parent is not None:
            mine = self._tmo_of.get(scope.parent)
            if mine is not None and scope in mine:
                mine.remove(scope)
                if not mine:
                    del self._tmo_of[scope.parent]
        if publish:
            self._publish(
                {
                    "ev": "exit",
                    "pid": scope.key,
                    "name": None,
                    "label": scope.kind,
                    "reason": reason,
                    "reason_kind": "normal" if reason == "normal" else "shutdown",
                    "exception": None,
                    "traceback": None,
                    "time": time.time(),
                    "report": None,
                }
            )

    def recheck(self) -> None:
        """Tasks spawned in the last second: their scope may have come after
        the factory (a TaskGroup adds its callback once the task exists)."""
        now = time.monotonic()
        fresh = self._fresh
        while fresh and (fresh[0].spawned < now - RECHECK_S or len(fresh) > 512):
            fresh.popleft()
        for rec in fresh:
            was = rec.scope
            if (was is not None and was.kind != "timeout") or rec.key not in self.shown:
                continue
            task = rec.ref()
            if task is None:
                continue
            scope = self._scope_of(task, rec)
            if scope is not None:
                if was is not None:
                    was.children -= 1
                rec.scope = scope
                scope.children += 1
                self._move(rec, scope.key)

    def _move(self, rec: TaskRec, sup: str) -> None:
        rec.sup = sup
        self.shown[rec.key] = (sup, rec.name)
        self._publish(
            {
                "ev": "update",
                "pid": rec.key,
                "name": rec.name,
                "label": rec.coro,
                **_meta(sup, "task"),
                "time": time.time(),
            }
        )

    # -- timeouts ------------------------------------------------------------------------------

    def _timeout_around(self, task_key: str | None, created: float) -> ScopeRec | None:
        """The innermost active timeout of the task ``task_key`` (the earliest
        deadline), read afresh if the last reading is older than ``created``."""
        if task_key is None:
            return None
        if self._tmo_read_at < created:
            self._read_timeouts(min_gap=0.02)
        if self._tmo_wait:
            self._open_waiting(task_key)
        mine = self._tmo_of.get(task_key)
        if not mine:
            return None
        live = [s for s in mine if not _scope_over(s)]
        if not live:
            return None
        return min(live, key=lambda s: s.deadline if s.deadline is not None else float("inf"))

    def _may_have_timeout(self, created: float) -> bool:
        """False when no timeout can hold a task created at ``created``: none is
        drawn or waiting for its task, and the timers were read since (the
        usual case: a loop with no ``asyncio.timeout`` scope open)."""
        return bool(self._tmo_of or self._tmo_wait) or self._tmo_read_at < created

    def _open_waiting(self, task_key: str) -> None:
        """Timeouts read while their task was not drawn yet: opened now that it is."""
        for ref, when, trec in self._tmo_wait.pop(task_key, ()):
            tmo = ref()
            if tmo is None or id(tmo) in self.scopes or trec.key not in self.shown or trec.ended:
                continue
            if timeout_state(tmo) == "active":
                self._open_timeout(tmo, trec, when, True)

    def _read_timeouts(self, *, min_gap: float = TIMEOUT_SCAN_S, publish: bool = True) -> None:
        """Read the loop's active timeouts (at most every ``min_gap`` seconds,
        and never more than 2 % of the time): open a node for each new one
        whose task is drawn, note moved deadlines, end those that are over."""
        now = time.monotonic()
        if now - self._tmo_last < max(min_gap, self._tmo_cost * 50):
            return
        found = tmos.loop_timeouts(self.loop)
        self._tmo_cost = time.monotonic() - now
        self._tmo_last = now
        self._tmo_read_at = time.time()
        wait: dict[str, list[tuple[Any, float, TaskRec]]] = {}
        for tmo, when in found or ():
            s = self.scopes.get(id(tmo))
            if s is not None and s.ref() is tmo:
                s.deadline = when
                continue
            task = tmos.timeout_task(tmo)
            trec = self._rec_of(task) if task is not None else None
            if trec is None or trec.ended:
                continue
            if trec.key in self.shown:
                self._open_timeout(tmo, trec, when, publish)
            else:
                wait.setdefault(trec.key, []).append((weakref.ref(tmo), when, trec))
        self._tmo_wait = wait
        for s in [s for mine in self._tmo_of.values() for s in mine]:
            if _scope_over(s):
                self._end_timeout(s, publish)

    def _open_timeout(self, tmo: object, trec: TaskRec, when: float, publish: bool) -> None:
        s = ScopeRec(self._key(), "timeout", tmo, trec.key, trec.key, self.root_key)
        s.deadline, s.task = when, trec
        self.scopes[id(tmo)] = s
        if self._made_scopes is not None:
            self._made_scopes.append(s)
        self.shown[s.key] = (trec.key, "timeout")
        self._tmo_of.setdefault(trec.key, []).append(s)
        if publish:
            self._publish(
                {"ev": "spawn", "pid": s.key, "name": None, "label": "timeout", "parent": trec.key, "time": s.created}
                | _meta(trec.key, "timeout")
            )

    def _end_timeout(self, s: ScopeRec, publish: bool) -> None:
        """A timeout is over: what was drawn inside it moves to its task, and it exits
        (reason ``expired`` if it cancelled its task)."""
        obj = s.ref()
        state = timeout_state(obj) if obj is not None else "finished"
        sup = s.sup if s.sup in self.shown else self.root_key
        if s.children > 0:
            for rec in list(self.live.values()):
                if rec.scope is s:
                    rec.scope = None
                    if publish:
                        self._move(rec, sup)
                    else:
                        rec.sup = sup
                        self.shown[rec.key] = (sup, rec.name)
        for g in list(self.scopes.values()):
            if g.sup == s.key:
                g.sup = sup
                self.shown[g.key] = (sup, g.kind)
                if publish:
                    self._publish(
                        {
                            "ev": "update",
                            "pid": g.key,
                            "name": None,
                            "label": g.kind,
                            **_meta(sup, g.kind),
                            "time": time.time(),
                        }
                    )
        self._close_scope(s, publish, "expired" if state in ("expired", "expiring") else "normal")

    def _end_timeouts_of(self, rec: TaskRec, publish: bool) -> None:
        """The task ended: so did its timeouts."""
        for s in list(self._tmo_of.get(rec.key, ())):
            self._end_timeout(s, publish)

"""The asyncio source's records: one per task and per scope, and the small
helpers that read a task without changing it (see ``agent/_aio_source.py``)."""

from __future__ import annotations

import asyncio
import asyncio.taskgroups
import os
import time
import weakref
from typing import Any

from ._aio_inspect import coro_name, task_coro

_SKIP_DIRS = (os.path.dirname(asyncio.__file__) + os.sep, os.path.dirname(__file__) + os.sep)
_HANDLE_RUN = asyncio.events.Handle._run.__code__
"""Walking up from the factory, this frame means "created from a loop callback"."""
_TG_CREATE = asyncio.taskgroups.TaskGroup.create_task.__code__
"""Walking up from the factory, this frame's ``self`` is the TaskGroup the task joins."""
_CREATE_TASK = asyncio.tasks.create_task.__code__
"""``asyncio.create_task``'s code: two frames up from the factory (above ``loop.create_task``), the usual case."""
_THREADSAFE_CB = next(
    (c for c in asyncio.run_coroutine_threadsafe.__code__.co_consts if getattr(c, "co_name", None) == "callback"),
    None,
)


class TaskRec(weakref.ref):
    """One task: a weak reference to it (``rec()`` is the task, or None once
    collected), and what is known of it (host thread creates it; the agent
    thread fills ``sup`` and the counters). One object a task, no tuples:
    records of tasks that end within the lazy delay are the host's only
    allocations that outlive a step, and each one that survives a collection
    of the young generation adds to the next full one."""

    __slots__ = (
        "key",
        "root",
        "parent",
        "created",
        "wcode",
        "wlasti",
        "_where",
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
        "ended",
        "prec",
        "group",
        "flush",
        "lazy",
    )

    key: str
    root: str
    parent: str | None
    """The key of ``prec``, the task that created it (None: none known)."""
    prec: TaskRec | None
    """The record of the task that created it."""
    origin: str
    created: float

    def __init__(self, task: asyncio.Task[Any]) -> None:
        # only the task: weakref.ref.__new__ takes no more, and keywords cost
        # twice the whole construction. The one maker (``HostHooks._track``) sets
        # key, root, parent, prec, origin and created right after
        self.wcode: Any = None
        """The code object of the line that created the task, and its ``f_lasti``:
        read into ``where`` only if the task is drawn (``where``)."""
        self.wlasti = -1
        self._where: tuple[str, int, str] | None = None
        self.name: str | None = None
        self.coro: str | None = None
        self.sup: str | None = None
        self.scope: ScopeRec | None = None
        self.steps = 0
        self.time_s = 0.0
        self.pos: tuple[int, int] | None = None
        self.row: list[Any] | None = None
        self.spawned = 0.0
        """When its spawn was published (0: not yet; agent thread)."""
        self.ended = False
        self.group: Any = None
        """Its TaskGroup, known at creation (a weak reference), or, once a member
        of its group or gather failed, the group or gathering future itself (held
        until the agent has drawn it: see ``HostHooks._flush_group``)."""
        self.flush = False
        """Draw it even if it ended before the agent looked: a member of its
        group or gather failed, or it logged an error (host thread sets it)."""
        self.lazy = False
        """Its spawn event is queued and the agent has not read it yet (the
        factory's tasks; the agent clears it first thing when it does): if it
        ends ordinarily meanwhile, its end needs no event at all (see
        ``HostHooks._on_done``)."""

    @property
    def ref(self) -> TaskRec:
        """The weak reference to the task (the record itself: ``rec.ref()`` is ``rec()``)."""
        return self

    @property
    def where(self) -> tuple[str, int, str] | None:
        """``(file, line, function)`` that created the task (None: unknown),
        resolved from the code object and offset kept at creation."""
        w = self._where
        if w is None and self.wcode is not None:
            code, self.wcode = self.wcode, None
            w = self._where = (code.co_filename, _line(code, self.wlasti), code.co_qualname)
        return w


def _line(code: Any, lasti: int) -> int:
    """The line of the instruction at byte offset ``lasti`` of ``code`` (as ``f_lineno``)."""
    try:
        for start, end, line in code.co_lines():
            if start <= lasti < end:
                return int(line) if line is not None else code.co_firstlineno
    except Exception:
        pass
    return int(code.co_firstlineno)


class ScopeRec:
    """A TaskGroup, a gather or an ``asyncio.timeout`` (agent thread only)."""

    __slots__ = ("key", "kind", "ref", "sup", "parent", "created", "children", "root", "deadline", "task")

    def __init__(self, key: str, kind: str, obj: object, sup: str, parent: str | None, root: str) -> None:
        self.key = key
        self.kind = kind
        self.ref = weakref.ref(obj)
        self.sup = sup
        self.parent = parent
        self.root = root
        self.created = time.time()
        self.children = 0
        self.deadline: float | None = None
        """A timeout's deadline (loop time; None: no deadline)."""
        self.task: TaskRec | None = None
        """A timeout's task."""


def _site(frame: Any, origin: str) -> tuple[Any, int, str, Any]:
    """The first frame outside asyncio and the agent, walking up from the
    factory's caller, as its code object and ``f_lasti`` (None, -1: none);
    the origin; and the TaskGroup whose ``create_task`` is on the way (or None)."""
    f = frame
    threadsafe = False
    group = None
    for _ in range(16):
        if f is None:
            break
        code = f.f_code
        if code is _TG_CREATE:
            group = f.f_locals.get("self")  # TaskGroup.create_task's own frame: asyncio's, not the application's
        elif code is _THREADSAFE_CB:
            threadsafe = True
        elif code is _HANDLE_RUN:
            break  # created from a loop callback with no application frame on the way
        elif not code.co_filename.startswith(_SKIP_DIRS):
            return code, f.f_lasti, origin, group
        f = f.f_back
    return None, -1, "threadsafe" if threadsafe else ("callback" if origin == "task" else origin), group


def _where(w: tuple[str, int, str] | None) -> str | None:
    return None if w is None else f"{w[0]}:{w[1]} in {w[2]}"


def _coro_of(task: asyncio.Task[Any]) -> str | None:
    try:
        coro = task_coro(task)
        return None if coro is None else coro_name(coro)
    except Exception:
        return None


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
    if s.kind == "timeout":
        return timeout_state(obj) not in ("active", "expiring")
    if s.kind == "gather":
        return bool(obj.done())  # type: ignore[attr-defined]
    parent = getattr(obj, "_parent_task", None)
    if isinstance(parent, asyncio.Task) and parent.done():
        return True
    return bool(getattr(obj, "_exiting", False)) and not getattr(obj, "_tasks", None)


def timeout_state(tmo: object) -> str:
    """An ``asyncio.Timeout``'s state: ``created``, ``active``, ``expiring``
    (it fired; its task is being cancelled), ``expired`` or ``finished``."""
    st = getattr(tmo, "_state", None)
    v = getattr(st, "value", None)
    return v if isinstance(v, str) else "unknown"


def _meta(sup: str | None, kind: str) -> dict[str, Any]:
    return {"supervisor": sup, "child_id": None, "kind": kind, "restarts": 0, "trap_exit": False, "budget": None}


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
        "trap_exit": False,
        "started_at": started,
        "budget": None,
    }

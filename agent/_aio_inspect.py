"""Reading one asyncio task without changing it: its await chain, what it
waits on, and its crash report. Never raises on odd objects.

Only native coroutines, generators and async generators are followed down
an await chain (``cr_await`` / ``gi_yieldfrom`` / ``ag_await``); an object of
any other type ends the chain, and no method of a user object is called
(no ``repr``, no ``__getattr__``): an awaitable that is not a coroutine shows
as its type name. Locals are read only from asyncio's own frames (a
``sleep``'s delay, a lock or queue's ``self``), never from user code.
"""

from __future__ import annotations

import asyncio
import os
import sys
import sysconfig
import traceback
import types
from typing import Any

from ._scrub import RedactionPolicy, redact_text

MAX_TEXT = 16 * 1024
MAX_CHAIN = 40

_ASYNCIO_DIR = os.path.dirname(asyncio.__file__) + os.sep
_LIB_DIRS = tuple(
    {p + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib") if (p := sysconfig.get_paths().get(k))}
)

_WAITS: dict[str, str] = {
    "sleep": "sleep",
    "Lock.acquire": "lock",
    "Semaphore.acquire": "semaphore",
    "BoundedSemaphore.acquire": "semaphore",
    "Event.wait": "event",
    "Condition.wait": "condition",
    "Condition.wait_for": "condition",
    "Barrier.wait": "barrier",
    "Queue.get": "queue",
    "Queue.put": "queue",
    "Queue.join": "queue",
    "StreamReader._wait_for_data": "socket",
    "StreamReader.read": "socket",
    "StreamReader.readline": "socket",
    "StreamReader.readexactly": "socket",
    "StreamReader.readuntil": "socket",
    "StreamWriter.drain": "socket",
    "FlowControlMixin._drain_helper": "socket",
    "wait_for": "wait_for",
    "wait": "wait",
    "_wait": "wait",
    "as_completed": "wait",
    "shield": "shield",
    "TaskGroup.__aexit__": "taskgroup",
    "TaskGroup._aexit": "taskgroup",
    "Timeout.__aexit__": "timeout",
}
"""asyncio functions (``co_qualname``) a task may be suspended in, and what that means."""


# -- what asyncio keeps private: read here only, never written ---------------------------------------


def task_waiter(task: asyncio.Task[Any]) -> object | None:
    """The future the task is suspended on (``Task._fut_waiter``; no public accessor)."""
    return getattr(task, "_fut_waiter", None)


def task_exception(task: asyncio.Task[Any]) -> BaseException | None:
    """A done task's exception, without retrieving it: ``Task.exception()``
    would mark it retrieved and silence asyncio's own "exception was never
    retrieved" warning (``Future._exception``)."""
    exc = getattr(task, "_exception", None)
    return exc if isinstance(exc, BaseException) else None


def task_callbacks(task: asyncio.Task[Any]) -> list[Any]:
    """The done callbacks, ``(callback, context)`` pairs (``Future._callbacks``):
    where a TaskGroup's or a gather's hold on the task shows."""
    cbs = getattr(task, "_callbacks", None)
    return list(cbs) if cbs else []


def only_callback(task: asyncio.Task[Any], cb: Any) -> bool:
    """Whether ``cb`` is the task's only done callback (``Future._callbacks``),
    without copying the list as :func:`task_callbacks` does."""
    cbs = getattr(task, "_callbacks", None)
    if not cbs or len(cbs) != 1:
        return False
    item = cbs[0]
    return type(item) is tuple and item[0] is cb


_CALL_GRAPH: Any = getattr(asyncio, "capture_call_graph", None)
"""Python 3.14+: ``asyncio.capture_call_graph`` (None before). UNTESTED: this
project's tests run on 3.11, where the path below is never taken."""


def awaiters(tasks: list[asyncio.Task[Any]]) -> dict[int, asyncio.Task[Any]]:
    """id(task) -> a task that awaits it, from 3.14's call graph (which also
    sees a TaskGroup's children awaited by the group's task); empty before
    3.14 or if the graph cannot be read. Host loop (adoption)."""
    out: dict[int, asyncio.Task[Any]] = {}
    if _CALL_GRAPH is None:
        return out
    for t in tasks:
        try:
            graph = _CALL_GRAPH(t, limit=0)  # no frames: only who awaits it
            for up in getattr(graph, "awaited_by", None) or ():
                fut = getattr(up, "future", None)
                if isinstance(fut, asyncio.Task) and fut is not t:
                    out[id(t)] = fut
                    break
        except Exception:
            continue
    return out


def is_own(filename: str) -> bool:
    """Application code: not asyncio, the standard library or an installed package."""
    return not filename.startswith(_LIB_DIRS) and not filename.startswith("<")


def short_type(obj: object) -> str:
    t = type(obj)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ not in ("builtins", None) else t.__qualname__


_GENERATORS = (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)


GET_CORO_MAY_CRASH = (3, 12) <= sys.version_info[:3] < (3, 12, 5)
"""On 3.12.0 to 3.12.4 ``Task.get_coro()`` of an eager task that finished in its
first step (its coroutine already dropped) dereferences NULL and kills the
process (python/cpython#122332, fixed in 3.12.5 and 3.13)."""


def task_coro(task: asyncio.Task[Any]) -> Any:
    """``task.get_coro()``, without the crash of an affected 3.12 (see
    ``GET_CORO_MAY_CRASH``): there a done task's coroutine is read from the
    ``_coro`` attribute, which gives None for a dropped one. A coroutine is
    dropped only inside the task's eager start, before anyone else holds the
    task, so checking ``done()`` first is not a race."""
    if GET_CORO_MAY_CRASH and task.done():
        return getattr(task, "_coro", None)
    return task.get_coro()


def coro_name(coro: object) -> str:
    """The coroutine's qualified name, without calling anything of the object's own."""
    if isinstance(coro, _GENERATORS):
        try:
            return str(coro.__qualname__)[:200]
        except Exception:
            pass
    return short_type(coro)


def _frame_of(obj: object) -> types.FrameType | None:
    if isinstance(obj, types.CoroutineType):
        return obj.cr_frame
    if isinstance(obj, types.GeneratorType):
        return obj.gi_frame
    if isinstance(obj, types.AsyncGeneratorType):
        return obj.ag_frame
    return None


def _next(obj: object) -> object | None:
    if isinstance(obj, types.CoroutineType):
        return obj.cr_await
    if isinstance(obj, types.GeneratorType):
        return obj.gi_yieldfrom
    if isinstance(obj, types.AsyncGeneratorType):
        return obj.ag_await
    return None


def await_chain(task: asyncio.Task[Any]) -> tuple[list[types.FrameType], object | None]:
    """The task's suspended frames, outermost first, and the object that ends
    the chain (a future's iterator, a foreign awaitable, or None)."""
    frames: list[types.FrameType] = []
    try:
        obj: object | None = task_coro(task)
    except Exception:
        return frames, None
    while obj is not None and len(frames) < MAX_CHAIN:
        fr = _frame_of(obj)
        if fr is None:
            return frames, obj
        frames.append(fr)
        obj = _next(obj)
    return frames, None


def frame_dicts(frames: list[types.FrameType]) -> list[dict[str, Any]]:
    out = []
    for fr in frames:
        code = fr.f_code
        out.append({"function": code.co_qualname, "file": code.co_filename, "line": fr.f_lineno})
    return out


def waits_on(task: asyncio.Task[Any], frames: list[types.FrameType], key_of: Any) -> dict[str, Any] | None:
    """What a suspended task waits on: ``{"kind": ..., ...}``; None if it is not suspended.

    ``kind`` is ``task`` (with its ``pid`` if known), ``gather``, ``sleep``
    (with ``delay``), ``lock``, ``semaphore``, ``event``, ``condition``,
    ``queue``, ``socket``, ``wait_for``, ``wait``, ``taskgroup``,
    ``timeout``, ``future`` or ``other`` (with ``type``)."""
    if task.done():
        return None
    try:
        fut = task_waiter(task)
    except Exception:
        fut = None
    inner = None
    for fr in reversed(frames):
        if fr.f_code.co_filename.startswith(_ASYNCIO_DIR):
            inner = fr
        else:
            break
    if isinstance(fut, asyncio.Task):
        return {"kind": "task", "pid": key_of(fut), "name": _safe_name(fut)}
    if fut is not None and type(fut).__name__ == "_GatheringFuture":
        return {"kind": "gather"}
    if inner is not None:
        qn = inner.f_code.co_qualname
        kind = _WAITS.get(qn)
        if kind is not None:
            d: dict[str, Any] = {"kind": kind, "function": qn}
            if kind == "sleep":
                delay = inner.f_locals.get("delay")
                if isinstance(delay, int | float):
                    d["delay"] = delay
            else:
                me = inner.f_locals.get("self")
                if me is not None and type(me).__module__.startswith("asyncio"):
                    d["object"] = _asyncio_repr(me)
            return d
    if fut is not None:
        return {"kind": "future", "type": short_type(fut)}
    return {"kind": "other", "type": None}


def _asyncio_repr(obj: object) -> str:
    """``repr`` of an asyncio object (a lock, a queue: their reprs are short and safe)."""
    try:
        return repr(obj)[:200]
    except Exception:
        return short_type(obj)


def _safe_name(task: asyncio.Task[Any]) -> str | None:
    try:
        return task.get_name()[:200]
    except Exception:
        return None


# -- crash reports ------------------------------------------------------------------------------


def crash_report(
    exc: BaseException,
    *,
    pid: str,
    name: str | None,
    label: str | None,
    when: float,
    kind: str,
    supervisor: str | None,
    ancestry: list[dict[str, Any]],
    policy: RedactionPolicy,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A task's exception as a crash report of the same shape as a process's
    (see ``agent/_crash.py``), redacted. Never raises."""
    d: dict[str, Any] = {
        "pid": pid,
        "name": name,
        "label": label,
        "time": when,
        "reason": None,
        "own": True,
        "kind": kind,
        "exception": type(exc).__name__,
        "exceptions": [],
        "traceback": None,
        "message_kind": None,
        "message": None,
        "state": None,
        "ancestry": ancestry,
        "supervisor": supervisor,
        "child_id": None,
        "restarts": 0,
        "budget": None,
        "flight": None,
        "handled": 0,
        "mailbox": 0,
        **(extra or {}),
    }
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        text = "".join(te.format())
        if len(text) > MAX_TEXT:
            text = text[: MAX_TEXT // 4] + "\n[... traceback truncated ...]\n" + text[-3 * MAX_TEXT // 4 :]
        d["traceback"] = redact_text(text, policy)
        d["exceptions"] = _chain(te, policy)
        d["reason"] = d["exceptions"][0]["message"] if d["exceptions"] else type(exc).__name__
    except Exception as e:  # a hostile exception: keep what is known
        d["traceback"] = f"<traceback unavailable: {type(e).__name__}>"
        d["reason"] = type(exc).__name__
    return d


def _chain(te: traceback.TracebackException, policy: RedactionPolicy) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cur: traceback.TracebackException | None = te
    relation = "raised"
    while cur is not None and len(out) < 20:
        out.append(_one(cur, relation, policy))
        for sub in (getattr(cur, "exceptions", None) or [])[:10]:
            out.append(_one(sub, "group", policy))
        if cur.__cause__ is not None:
            cur, relation = cur.__cause__, "cause"
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur, relation = cur.__context__, "context"
        else:
            cur = None
    return out


def _one(te: traceback.TracebackException, relation: str, policy: RedactionPolicy) -> dict[str, Any]:
    tname = getattr(te, "exc_type_str", None)  # 3.13+ (its exc_type is deprecated there)
    if not tname:
        et = getattr(te, "exc_type", None)
        tname = et.__qualname__ if et is not None else "?"
    msg = "".join(te.format_exception_only()).strip()
    return {
        "type": tname,
        "message": redact_text(msg[:2000], policy),
        "relation": relation,
        "frames": [
            {
                "file": fs.filename,
                "line": fs.lineno,
                "function": fs.name,
                "source": redact_text(fs.line[:500], policy) if fs.line else None,
                "own": is_own(fs.filename),
            }
            for fs in list(te.stack)[-50:]
        ],
    }

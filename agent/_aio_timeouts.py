"""Finding the active ``asyncio.timeout()`` scopes of a loop without a hook.

An entered :class:`asyncio.Timeout` with a deadline has a timer on its loop
whose callback is the bound method ``Timeout._on_timeout``; the timeout
knows its task (``_task``), its deadline (``when()``) and its state. The
agent reads the loop's timers (agent thread, read-only):

* asyncio's own loops keep them in a heap list (``BaseEventLoop._scheduled``;
  cancelled timers stay in it for a while: skipped);
* uvloop keeps them in a set the loop's C object holds but does not expose;
  the garbage collector's public :func:`gc.get_referents` reaches it (the set
  of ``uvloop.loop.TimerHandle``), and each timer's callback the same way.

A timeout with no deadline (``timeout(None)``, or rescheduled to None) has no
timer: it is found only while the agent already follows it (a timeout met
with a deadline, then rescheduled). Another loop implementation's timers are
not read: no timeout is shown there.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import operator
import types
from collections.abc import Iterable
from typing import Any

_ON_TIMEOUT = asyncio.Timeout._on_timeout  # type: ignore[attr-defined]
_CALLBACK = operator.attrgetter("_callback")
_CANCELLED = operator.attrgetter("_cancelled")
_FUNC = operator.attrgetter("__func__")
MAX_TIMERS = 200_000
"""Beyond this many timers on the loop, they are not read (each read is
O(timers) on the agent's thread; the agent's sampling budget also applies)."""


def loop_timeouts(loop: asyncio.AbstractEventLoop) -> list[tuple[Any, float]] | None:
    """``(timeout, deadline)`` of every active ``asyncio.timeout`` with a deadline
    on ``loop``; None when the loop's timers cannot be read. Never raises."""
    try:
        sched = getattr(loop, "_scheduled", None)
        if isinstance(sched, list):
            return _from_heap(sched)
        timers = _uvloop_timers(loop)
        if timers is not None:
            return _from_uvloop(timers)
    except Exception:
        pass
    return None


def _from_heap(sched: list[Any]) -> list[tuple[Any, float]] | None:
    handles = list(sched)  # one C call: a consistent copy (the host appends and pops)
    if len(handles) > MAX_TIMERS:
        return None
    # the filter runs in C (map, compress), first on the callback's type (a
    # getattr that fails costs an exception per timer), then on the function
    cbs = list(map(_CALLBACK, handles))
    is_method = list(map(operator.is_, map(type, cbs), itertools.repeat(types.MethodType)))
    handles = list(itertools.compress(handles, is_method))
    funcs = map(_FUNC, itertools.compress(cbs, is_method))
    hits = itertools.compress(handles, map(operator.is_, funcs, itertools.repeat(_ON_TIMEOUT)))
    out = []
    for h in hits:
        if _CANCELLED(h):
            continue
        tmo = h._callback.__self__
        if tmo._timeout_handler is h:  # the timeout's current timer (a reschedule cancels the old one)
            out.append((tmo, h.when()))
    return out


def _uvloop_timers(loop: asyncio.AbstractEventLoop) -> list[Any] | None:
    if not type(loop).__module__.startswith("uvloop"):
        return None
    for ref in gc.get_referents(loop):
        if type(ref) is set and ref:
            first = next(iter(ref), None)
            t = type(first)
            if t.__name__ == "TimerHandle" and t.__module__.startswith("uvloop"):
                return list(ref)
    return []


def _from_uvloop(timers: Iterable[Any]) -> list[tuple[Any, float]] | None:
    handles = list(timers)
    if len(handles) > MAX_TIMERS:
        return None
    out = []
    for h in handles:
        refs = gc.get_referents(h)  # callback, args, timer, loop, context, ... (uvloop's TimerHandle)
        if not refs:
            continue
        cb = refs[0]
        if type(cb) is types.MethodType and cb.__func__ is _ON_TIMEOUT and not h.cancelled():
            tmo: Any = cb.__self__
            if tmo._timeout_handler is h:
                out.append((tmo, h.when()))
    return out


def timeout_task(tmo: Any) -> asyncio.Task[Any] | None:
    t = getattr(tmo, "_task", None)
    return t if isinstance(t, asyncio.Task) else None


def timeout_deadline(tmo: Any) -> float | None:
    try:
        when = tmo.when()
    except Exception:
        return None
    return float(when) if isinstance(when, int | float) else None

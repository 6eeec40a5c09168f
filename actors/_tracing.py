"""The traced side of ``Process.call``: only a traced caller ever gets here.

An untraced caller pays one attribute check in ``Process.call`` (the same
single check as ``send`` and ``receive``); a traced one emits
:class:`CallSent` before the call and :class:`CallReturned` after it, so that
an instrument sees calls and replies apart from plain messages even when the
server is not traced.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._events import CallReturned, CallSent
from ._types import Pid

if TYPE_CHECKING:
    from ._process import Process


async def traced_call(proc: Process, dest: Pid | str, request: Any, timeout: float | None) -> Any:
    """``proc.node.call(dest, request)`` with the caller's trace events around it."""
    node = proc.node
    node._emit(CallSent(proc.pid, dest, request, time.time()))
    try:
        value = await node.call(dest, request, timeout=timeout)
    except BaseException as exc:
        if proc.traced:
            node._emit(CallReturned(proc.pid, dest, exc, False, time.time()))
        raise
    if proc.traced:
        node._emit(CallReturned(proc.pid, dest, value, True, time.time()))
    return value

"""The gen_server call protocol seen from outside any process: call and cast.

A call's deadline is kept by one sweeper timer per node for long timeouts
(the 5 s default) and by a timer of its own for short ones. Runs on the
node's loop thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ._errors import CallError, CallTimeout, ServerDied, check_timeout
from ._messages import CallMsg, CastMsg, From
from ._node_state import NodeState
from ._types import NOPROC, Pid


class Calls(NodeState):
    """The node's gen_server client side (a base of :class:`~actors.Node`)."""

    async def call(self, dest: Pid | str, request: Any, *, timeout: float | None = 5.0) -> Any:
        """Send ``request`` to a gen_server and wait for its reply.

        Raises :class:`CallTimeout` if no reply comes within ``timeout`` seconds
        (None waits forever) and :class:`ServerDied` if the server is not alive
        or exits before replying. Never hangs on a dead server. A timeout that
        is not None or a number >= 0 raises ``ValueError`` / ``TypeError``
        before anything is sent.
        """
        if timeout is not None and timeout != 5.0:
            check_timeout(timeout)
        if type(dest) is Pid:
            p = self._procs.get(dest.id)
            if p is not None and p.pid is not dest and p.pid != dest:
                p = None
        else:
            p = self._names.get(dest)  # type: ignore[arg-type]
        if p is None:
            raise ServerDied(dest, NOPROC)
        loop = self._loop or self.loop
        task = p._task
        if task is not None and task is asyncio.current_task(loop):
            raise CallError(dest, "calling_self")  # it could never answer: fail now, as OTP does
        fut: asyncio.Future[Any] = loop.create_future()
        # the From is also the call's watch on the server: its death fails the
        # call (one object per call, no Ref: the From is its own key)
        from_ = From(fut, None, p, dest)
        mons = p._monitors
        if mons is None:
            mons = p._monitors = {}
        mons[from_] = from_
        msg = CallMsg(request, from_)
        p._deliver(msg)
        handle = None
        calls = self._calls
        if timeout is not None:
            if timeout >= _SWEPT_TIMEOUT:
                # long timeouts (the 5 s default) are checked by one sweeper
                # timer per node instead of one timer per call
                calls[msg] = (_monotonic() + timeout, timeout)
                if self._sweeper is None:
                    self._sweeper = loop.call_later(_SWEEP_EVERY, self._sweep_calls)
            else:
                handle = loop.call_later(timeout, _call_timeout, fut, dest, request, timeout)
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            elif timeout is not None:
                calls.pop(msg, None)
            mons = p._monitors
            if mons is not None:
                mons.pop(from_, None)

    def _sweep_calls(self) -> None:
        """Fail the calls whose deadline passed; re-arm while calls are pending."""
        self._sweeper = None
        calls = self._calls
        if not calls:
            return
        now = _monotonic()
        for msg, (deadline, timeout) in list(calls.items()):
            if deadline <= now:
                del calls[msg]
                from_ = msg.reply_to
                _call_timeout(from_._fut, from_.dest, msg.request, timeout)
        if calls:
            self._sweeper = self.loop.call_later(_SWEEP_EVERY, self._sweep_calls)

    def cast(self, dest: Pid | str, request: Any) -> None:
        """Send an asynchronous request to a gen_server. Never blocks, never
        raises: a dead pid or a name nobody holds drops it (OTP's fire and forget)."""
        p = self._get(dest)
        if p is not None:
            p._deliver(CastMsg(request))


_SWEPT_TIMEOUT = 1.0
"""Call timeouts of at least this many seconds are enforced by the sweeper."""
_SWEEP_EVERY = 0.05
"""Sweeper period: such timeouts fire up to this late."""
_monotonic = time.monotonic


def _call_timeout(fut: asyncio.Future[Any], dest: object, request: object, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(dest, request, timeout))

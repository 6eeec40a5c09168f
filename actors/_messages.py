"""Envelopes of the gen_server protocol and the system messages.

A gen_server's mailbox holds :class:`CallMsg`, :class:`CastMsg`,
:class:`SysMsg` and any other term (delivered to ``handle_info``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ._events import CallReplied
from ._types import Ref


class From:
    """Where a call's reply goes. Passed to ``handle_call``; keep it to reply later
    (deferred reply) with :meth:`reply` or ``reply(from_, value)``.

    Replying twice, or after the caller gave up (timeout, death), does nothing.
    A reply counts as a message out of the server (its ``msgs_out``), whoever
    sends it.
    """

    __slots__ = ("_fut", "_server", "dest", "ref")

    def __init__(self, fut: Any, ref: Ref | None, server: Any = None, dest: Any = None) -> None:
        self._fut = fut
        self.ref = ref
        """The request's reference (None for a plain ``call``: it waits on a future)."""
        self._server = server
        """The server's :class:`Process`, whose ``msgs_out`` the reply counts in."""
        self.dest = dest
        """The server as the caller named it (pid or name), for errors."""

    def reply(self, value: Any) -> None:
        """Send ``value`` to the caller. Never blocks, never raises."""
        fut = self._fut
        if not fut.done():
            fut.set_result(value)
            srv = self._server
            if srv is not None:
                srv.msgs_out += 1
                if srv.traced:
                    srv.node._emit(CallReplied(srv.pid, self, value, time.time()))

    def __repr__(self) -> str:
        return f"<From {self.ref}>"


class RequestFrom(From):
    """The ``From`` of a request made with ``send_request``: the reply goes to
    the caller's mailbox as a :class:`ReplyMsg` (OTP's ``{Ref, Reply}``), while
    the request is active (a request abandoned by ``receive_response`` on
    timeout drops late replies, as OTP's alias does)."""

    __slots__ = ("_to", "active")

    def __init__(self, to: Any, ref: Ref, server: Any) -> None:
        super().__init__(None, ref, server)
        self.ref: Ref = ref
        self._to = to
        self.active = True

    def reply(self, value: Any) -> None:
        """Deliver ``ReplyMsg(ref, value)`` to the caller once. Never raises."""
        if not self.active:
            return
        self.active = False
        to = self._to
        if to.alive:
            to._deliver(ReplyMsg(self.ref, value))
        srv = self._server
        if srv is not None:
            srv.msgs_out += 1
            if srv.traced:
                srv.node._emit(CallReplied(srv.pid, self, value, time.time()))


class ReplyMsg:
    """The reply to a ``send_request``, as it lands in the caller's mailbox.
    Read it with ``check_response`` (or let ``wait_response`` take it)."""

    __slots__ = ("ref", "value")

    def __init__(self, ref: Ref, value: Any) -> None:
        self.ref = ref
        """The request id's reference."""
        self.value = value
        """The reply."""

    def __repr__(self) -> str:
        return f"ReplyMsg({self.ref!r}, {self.value!r})"


class CallMsg:
    """A synchronous request; the server must reply through ``reply_to``.

    A plain slotted class rather than a frozen dataclass: it is built on every
    call, and a frozen dataclass's ``__init__`` costs about three times more.
    Treat it as immutable.
    """

    __slots__ = ("reply_to", "request")

    def __init__(self, request: Any, reply_to: From) -> None:
        self.request = request
        """What the caller asked."""
        self.reply_to = reply_to
        """Where the reply goes."""

    def __repr__(self) -> str:
        return f"CallMsg({self.request!r}, {self.reply_to!r})"


class CastMsg:
    """An asynchronous request; no reply. (Slotted, not a dataclass: hot path.)"""

    __slots__ = ("request",)

    def __init__(self, request: Any) -> None:
        self.request = request
        """The message."""

    def __repr__(self) -> str:
        return f"CastMsg({self.request!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is CastMsg and other.request == self.request

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class SysMsg:
    """A system request answered by the behaviour itself (like OTP's ``sys``)."""

    kind: str
    """``"get_state"`` or ``"stop"``."""
    reply_to: From
    """Where the answer goes."""
    arg: Any = None
    """The stop reason, for ``"stop"``."""

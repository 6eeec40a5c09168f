"""Envelopes of the gen_server protocol and the system messages.

A gen_server's mailbox holds :class:`CallMsg`, :class:`CastMsg`,
:class:`SysMsg` and any other term (delivered to ``handle_info``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ._types import Ref


class From:
    """Where a call's reply goes. Passed to ``handle_call``; keep it to reply later
    (deferred reply) with :meth:`reply` or ``reply(from_, value)``.

    Replying twice, or after the caller gave up (timeout, death), does nothing.
    """

    __slots__ = ("_fut", "ref")

    def __init__(self, fut: asyncio.Future[Any], ref: Ref) -> None:
        self._fut = fut
        self.ref = ref

    def reply(self, value: Any) -> None:
        """Send ``value`` to the caller. Never blocks, never raises."""
        fut = self._fut
        if not fut.done():
            fut.set_result(value)

    def __repr__(self) -> str:
        return f"<From {self.ref}>"


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

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


@dataclass(frozen=True, slots=True)
class CallMsg:
    """A synchronous request; the server must reply through ``reply_to``."""

    request: Any
    """What the caller asked."""
    reply_to: From
    """Where the reply goes."""


@dataclass(frozen=True, slots=True)
class CastMsg:
    """An asynchronous request; no reply."""

    request: Any
    """The message."""


@dataclass(frozen=True, slots=True)
class SysMsg:
    """A system request answered by the behaviour itself (like OTP's ``sys``)."""

    kind: str
    """``"get_state"`` or ``"stop"``."""
    reply_to: From
    """Where the answer goes."""
    arg: Any = None
    """The stop reason, for ``"stop"``."""

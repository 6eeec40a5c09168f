"""What gen_server callbacks return: the results (:class:`Reply`,
:class:`NoReply`, :class:`Stop`, :class:`Ignore`) and the actions a result
carries as ``then=`` (:class:`Continue`, a timeout, :data:`HIBERNATE`).
See :mod:`actors._gen_server` for what the loop does with each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_NO_REPLY: Any = object()
TIMEOUT = "timeout"
"""The message ``handle_info`` gets when a callback's timeout passed with no message."""


@dataclass(frozen=True, slots=True)
class Continue:
    """An action (``then=``): run ``handle_continue(term, state)`` next,
    before any message, as OTP's ``{continue, Term}``."""

    term: Any
    """What ``handle_continue`` gets."""


@dataclass(frozen=True, slots=True)
class Hibernate:
    """An action (``then=``): wait for the next message holding as little
    memory as the runtime can give back. Use the :data:`HIBERNATE` instance."""


HIBERNATE = Hibernate()
"""The hibernate action (OTP's ``hibernate``)."""


class Reply:
    """``handle_call`` result: reply ``value`` and go on with ``state``.

    A plain slotted class rather than a frozen dataclass (as ``CallMsg``): one
    is built for every call, and a frozen dataclass's ``__init__`` costs about
    three times more. Treat it as immutable.
    """

    __slots__ = ("state", "then", "value")
    __match_args__ = ("value", "state", "then")

    def __init__(self, value: Any, state: Any, then: Any = None) -> None:
        self.value = value
        """The reply."""
        self.state = state
        """The new state."""
        self.then = then
        """An action: :class:`Continue`, a timeout in seconds, :data:`HIBERNATE`, or None."""

    def __repr__(self) -> str:
        return f"Reply(value={self.value!r}, state={self.state!r}, then={self.then!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is Reply and other.value == self.value and other.state == self.state and other.then == self.then
        )

    __hash__ = None  # type: ignore[assignment]


class NoReply:
    """Go on with ``state``, with an optional action. From ``handle_call``:
    no reply now (a deferred reply follows). From ``init``, ``handle_cast``,
    ``handle_info``, ``handle_continue``: the same as returning ``state``,
    plus ``then``. (Plain slotted class, like :class:`Reply`; treat it as immutable.)"""

    __slots__ = ("state", "then")
    __match_args__ = ("state", "then")

    def __init__(self, state: Any, then: Any = None) -> None:
        self.state = state
        """The new state."""
        self.then = then
        """An action: :class:`Continue`, a timeout in seconds, :data:`HIBERNATE`, or None."""

    def __repr__(self) -> str:
        return f"NoReply(state={self.state!r}, then={self.then!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is NoReply and other.state == self.state and other.then == self.then

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class Stop:
    """Any callback's result: stop with ``reason`` after ``terminate``; for
    ``handle_call``, ``reply`` (if given) is sent once ``terminate`` has run (as OTP)."""

    reason: Any
    """The exit reason."""
    state: Any = None
    """The state ``terminate`` gets."""
    reply: Any = _NO_REPLY
    """For ``handle_call``: the reply to send before stopping."""


@dataclass(frozen=True, slots=True)
class Ignore:
    """``init`` result: do not start; the starter gets ``None``."""

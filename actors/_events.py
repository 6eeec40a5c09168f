"""The instrument hook: typed, immutable events and the no-op :class:`Instrument`.

The events of a process's life (spawn, exit, restart, link, unlink) are
``NamedTuple`` types: an observed crash storm builds four or five of them
per kill, and a frozen dataclass's ``__init__`` costs about twice a named
tuple's (one ``object.__setattr__`` per field; callgrind, 6 fields: 10,500
instructions against 4,000). They compare equal only to an event of the same
type with the same fields, as the dataclasses did.

An instrument is any object with some of the methods of :class:`Instrument`
(subclass it to get no-op defaults). Register one with
``Node.add_instrument``. Methods are called synchronously on the node's event
loop, at the moment the event happens, so they must be quick and must not
block: hand the event to another thread or queue and return. An instrument
method that raises is removed and logged; the actor system goes on.

With no instrument registered no event object is ever created: the hot path
pays one truth test of a list.
"""

from __future__ import annotations

import traceback as _tb
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ._types import Pid, Ref

if TYPE_CHECKING:
    from ._crash import CrashReport


class _Lifecycle:
    """Equality of the named-tuple events: same type and same fields (a bare
    named tuple equals any tuple of the same values, a ``Linked`` an
    ``Unlinked``)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)  # type: ignore[operator]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return tuple.__hash__(self)  # type: ignore[arg-type]


class _SpawnedFields(NamedTuple):
    """The fields of :class:`Spawned`."""

    pid: Pid
    """The new process."""
    name: str | None
    """Its registered name at spawn time, if any."""
    label: str | None
    """Its label (a type-like tag such as ``"SessionWorker"``)."""
    parent: Pid | None
    """The process that spawned it (None when spawned from outside any process)."""
    time: float
    """Wall-clock time (``time.time()``) of the event."""


class Spawned(_Lifecycle, _SpawnedFields):
    """A process started."""

    __slots__ = ()
    hook = "spawned"


class _ExitedFields(NamedTuple):
    """The fields of :class:`Exited`."""

    pid: Pid
    """The process that exited."""
    reason: Any
    """Its exit reason; an exception object keeps its ``__traceback__``."""
    time: float
    """Wall-clock time of the event."""
    name: str | None = None
    """Its registered name when it exited (already unregistered by then)."""
    label: str | None = None
    """Its label."""
    report: CrashReport | None = None
    """The crash report of an abnormal exit (built at the moment of the crash,
    see :mod:`actors._crash`); None for ``normal``/``shutdown`` exits and when
    the node was created with ``crash_reports=False``."""


class Exited(_Lifecycle, _ExitedFields):
    """A process exited."""

    __slots__ = ()
    hook = "exited"

    def format_traceback(self) -> str | None:
        """The formatted traceback (cause chain included) if the reason is an
        exception, else None. Formats on demand: the runtime never does."""
        if not isinstance(self.reason, BaseException):
            return None
        return "".join(_tb.format_exception(self.reason))


class _RestartedFields(NamedTuple):
    """The fields of :class:`Restarted`."""

    supervisor: Pid
    """The supervisor."""
    child_id: Any
    """The child's id in its child spec."""
    old_pid: Pid | None
    """The pid that exited (None if the child was not running)."""
    new_pid: Pid | None
    """The new pid (None if the restart's start returned ignore)."""
    restarts: int
    """How many times this child has been restarted, this one included."""
    time: float
    """Wall-clock time of the event."""


class Restarted(_Lifecycle, _RestartedFields):
    """A supervisor restarted one of its children."""

    __slots__ = ()
    hook = "restarted"


class _LinkedFields(NamedTuple):
    """The fields of :class:`Linked`."""

    a: Pid
    """The process that asked for the link."""
    b: Pid
    """The other one."""
    time: float
    """Wall-clock time of the event."""


class Linked(_Lifecycle, _LinkedFields):
    """Two processes were linked."""

    __slots__ = ()
    hook = "linked"


class _UnlinkedFields(NamedTuple):
    """The fields of :class:`Unlinked`."""

    a: Pid
    """The process that asked."""
    b: Pid
    """The other one."""
    time: float
    """Wall-clock time of the event."""


class Unlinked(_Lifecycle, _UnlinkedFields):
    """A link was removed by ``unlink`` (not by an exit)."""

    __slots__ = ()
    hook = "unlinked"


@dataclass(frozen=True, slots=True)
class Monitored:
    """A process started monitoring another one."""

    watcher: Pid | None
    """The monitoring process (None for an internal monitor such as a call's)."""
    target: Pid
    """The monitored process."""
    ref: Ref
    """The monitor reference."""
    time: float
    """Wall-clock time of the event."""
    hook = "monitored"


@dataclass(frozen=True, slots=True)
class Demonitored:
    """A monitor was removed by ``demonitor`` (not by an exit)."""

    watcher: Pid | None
    """The monitoring process."""
    target: Pid
    """The monitored process."""
    ref: Ref
    """The monitor reference."""
    time: float
    """Wall-clock time of the event."""
    hook = "demonitored"


@dataclass(frozen=True, slots=True)
class Registered:
    """A name was registered (``pid`` set) or unregistered (``pid`` None)."""

    name: str
    """The name."""
    pid: Pid | None
    """The process now holding it, or None when unregistered."""
    time: float
    """Wall-clock time of the event."""
    hook = "registered"


@dataclass(frozen=True, slots=True)
class Suspended:
    """A process was suspended."""

    pid: Pid
    """The process."""
    time: float
    """Wall-clock time of the event."""
    hook = "suspended"


@dataclass(frozen=True, slots=True)
class Resumed:
    """A suspended process was resumed."""

    pid: Pid
    """The process."""
    time: float
    """Wall-clock time of the event."""
    hook = "resumed"


@dataclass(frozen=True, slots=True)
class SupervisorGaveUp:
    """A supervisor exceeded its restart intensity and is shutting down."""

    supervisor: Pid
    """The supervisor."""
    child_id: Any
    """The child whose exit exceeded the budget."""
    restarts: int
    """Restarts counted in the current period, the one that exceeded included."""
    intensity: int
    """The allowed restarts per period."""
    period: float
    """The period, in seconds."""
    time: float
    """Wall-clock time of the event."""
    hook = "supervisor_gave_up"


@dataclass(frozen=True, slots=True)
class MessageSent:
    """A traced process sent a message (only for processes being traced)."""

    sender: Pid
    """The traced sender."""
    to: Pid | str
    """The destination pid or name."""
    message: Any
    """The message itself (a reference, not a copy)."""
    time: float
    """Wall-clock time of the event."""
    hook = "message_sent"


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A traced process took a message out of its mailbox."""

    pid: Pid
    """The traced receiver."""
    message: Any
    """The message itself (a reference, not a copy)."""
    time: float
    """Wall-clock time of the event."""
    hook = "message_received"


class _TraceEvent:
    """Base of the call events: plain slotted classes rather than frozen
    dataclasses, because a traced call builds two or three of them and a frozen
    dataclass's ``__init__`` costs about three times more. Treat them as immutable."""

    __slots__ = ()
    hook: ClassVar[str] = ""

    def __repr__(self) -> str:
        names: tuple[str, ...] = type(self).__slots__
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in names)
        return f"{type(self).__name__}({fields})"


class CallSent(_TraceEvent):
    """A traced process called a gen_server with ``Process.call`` (only for
    traced callers). The server's side shows the same call as a
    :class:`MessageReceived` whose message is a ``CallMsg`` with this ``request``
    (the very object)."""

    __slots__ = ("pid", "request", "time", "to")
    hook = "call_sent"

    def __init__(self, pid: Pid, to: Pid | str, request: Any, time: float) -> None:
        self.pid = pid
        """The traced caller."""
        self.to = to
        """The server as the caller named it."""
        self.request = request
        """The request (a reference, not a copy)."""
        self.time = time
        """Wall-clock time of the event."""


class CallReturned(_TraceEvent):
    """A traced caller's ``Process.call`` ended: the reply came (``ok``), or the
    call failed and ``value`` is the exception it raises."""

    __slots__ = ("ok", "pid", "time", "to", "value")
    hook = "call_returned"

    def __init__(self, pid: Pid, to: Pid | str, value: Any, ok: bool, time: float) -> None:
        self.pid = pid
        """The traced caller."""
        self.to = to
        """The server as the caller named it."""
        self.value = value
        """The reply, or the exception."""
        self.ok = ok
        """Whether a reply came."""
        self.time = time
        """Wall-clock time of the event."""


class CallReplied(_TraceEvent):
    """A traced gen_server replied to a call (from ``handle_call``, or later
    through ``From.reply``: a deferred reply is traced too)."""

    __slots__ = ("pid", "reply_to", "time", "value")
    hook = "call_replied"

    def __init__(self, pid: Pid, reply_to: Any, value: Any, time: float) -> None:
        self.pid = pid
        """The traced server."""
        self.reply_to = reply_to
        """The call's ``From``: the same object as in the ``CallMsg`` it received."""
        self.value = value
        """The reply (a reference, not a copy)."""
        self.time = time
        """Wall-clock time of the event."""


Event = (
    Spawned
    | Exited
    | Restarted
    | Linked
    | Unlinked
    | Monitored
    | Demonitored
    | Registered
    | Suspended
    | Resumed
    | SupervisorGaveUp
    | MessageSent
    | MessageReceived
    | CallSent
    | CallReturned
    | CallReplied
)


class Instrument:
    """No-op base for instruments. Override the methods you need.

    Every method runs on the node's event loop, synchronously, at the moment of
    the event. Keep it short and never block; an exception removes the
    instrument (logged) and the node goes on.
    """

    def spawned(self, event: Spawned) -> None:
        """A process started."""

    def exited(self, event: Exited) -> None:
        """A process exited."""

    def restarted(self, event: Restarted) -> None:
        """A supervisor restarted a child."""

    def linked(self, event: Linked) -> None:
        """Two processes were linked."""

    def unlinked(self, event: Unlinked) -> None:
        """A link was removed."""

    def monitored(self, event: Monitored) -> None:
        """A monitor was set."""

    def demonitored(self, event: Demonitored) -> None:
        """A monitor was removed."""

    def registered(self, event: Registered) -> None:
        """A name was registered or unregistered."""

    def suspended(self, event: Suspended) -> None:
        """A process was suspended."""

    def resumed(self, event: Resumed) -> None:
        """A process was resumed."""

    def supervisor_gave_up(self, event: SupervisorGaveUp) -> None:
        """A supervisor exceeded its restart intensity."""

    def message_sent(self, event: MessageSent) -> None:
        """A traced process sent a message."""

    def message_received(self, event: MessageReceived) -> None:
        """A traced process received a message."""

    def call_sent(self, event: CallSent) -> None:
        """A traced process called a gen_server."""

    def call_returned(self, event: CallReturned) -> None:
        """A traced process's call returned or failed."""

    def call_replied(self, event: CallReplied) -> None:
        """A traced gen_server replied to a call."""

"""Every error the actor system raises, in one place.

All of them derive from :class:`ActorError`, so ``except ActorError`` catches
anything this package raises on purpose.
"""

from __future__ import annotations

from typing import Any


class ActorError(Exception):
    """Base class of every error raised by :mod:`actors`."""


class NoProcess(ActorError):
    """Raised when an operation needs a live process and there is none.

    ``target`` is the pid or registered name that was asked for.
    """

    def __init__(self, target: object) -> None:
        super().__init__(f"no such process: {target}")
        self.target = target


class NameTaken(ActorError):
    """Raised when a name cannot be given: ``register`` (or a start or spawn
    with ``name=``) for a name already registered (OTP's ``already_started``),
    or ``register`` for a process that already has a name (Erlang's ``badarg``).

    ``name`` is the name asked for; ``pid`` is the process holding it (for a
    taken name: OTP's ``{already_started, Pid}``), or the process that already
    has another name.
    """

    def __init__(self, name: str, pid: Any = None, message: str | None = None) -> None:
        if message is None:
            message = f"name already registered: {name!r}" + (f" (by {pid})" if pid is not None else "")
        super().__init__(message)
        self.name = name
        self.pid = pid


class CallTimeout(ActorError, TimeoutError):
    """Raised by ``call`` when no reply arrived within the timeout.

    The server may still be working on the request; a late reply is dropped.
    """

    def __init__(self, target: object, request: object, timeout: float) -> None:
        super().__init__(f"call to {target} timed out after {timeout:g}s (request: {_short(request)})")
        self.target = target
        self.request = request
        self.timeout = timeout


class ServerDied(ActorError):
    """Raised by ``call`` when the server exited (or did not exist) before it replied.

    ``reason`` is the server's exit reason (``"noproc"`` if it was not alive).
    """

    def __init__(self, target: object, reason: Any) -> None:
        super().__init__(f"server {target} exited before replying: {format_reason(reason)}")
        self.target = target
        self.reason = reason


class CallError(ActorError):
    """Raised by ``call`` when the call cannot be made at all; ``reason`` is
    OTP-like: ``"calling_self"`` (a server calling itself would wait forever)."""

    def __init__(self, target: object, reason: str) -> None:
        super().__init__(f"cannot call {target}: {reason}")
        self.target = target
        self.reason = reason


class StartError(ActorError):
    """Raised when starting a process failed: its ``init`` raised, returned a
    stop, or timed out. ``reason`` says why."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"start failed: {format_reason(reason)}")
        self.reason = reason


class SupervisorError(ActorError):
    """Raised by the supervisor client functions (``start_child``,
    ``terminate_child``...) when the supervisor refused the request. ``reason``
    is OTP's: ``not_found``, ``running``, ``restarting``, ``already_present``,
    ``("already_started", pid)``, ``simple_one_for_one`` (an operation that
    kind of supervisor does not take), ``("bad_combination", ...)``, or why a
    child's start failed."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"supervisor refused: {reason!r}")
        self.reason = reason


class ProcessExit(BaseException):
    """Raised inside a process by ``Process.exit(reason)`` to end it with ``reason``.

    A ``BaseException`` so that a bare ``except Exception`` in user code does not
    swallow it. Not raised to callers outside the process.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def check_timeout(timeout: Any) -> float | None:
    """Validate a timeout in seconds: None (wait forever) or a real number >= 0.
    Raises ``TypeError`` or ``ValueError`` naming the bad value (OTP raises on a
    bad timeout before doing anything; so do we)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be None or a number of seconds, not {type(timeout).__name__}")
    if not timeout >= 0:  # also refuses NaN
        raise ValueError(f"timeout must be >= 0 seconds (or None), not {timeout!r}")
    return float(timeout)


def _short(value: object, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # an unprintable value must not hide the real error
        text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_reason(reason: Any) -> str:
    """A short, never-raising text for an exit reason."""
    if type(reason) is str:  # atoms-like reasons print bare, as in Erlang: normal, shutdown, killed
        return reason if len(reason) <= 200 else reason[:197] + "..."
    if isinstance(reason, BaseException):
        try:
            text = str(reason)
        except Exception:
            text = ""
        if len(text) > 200:
            text = text[:197] + "..."
        return f"{type(reason).__name__}: {text}" if text else type(reason).__name__
    return _short(reason)


class ReceiveTimeout(ActorError, TimeoutError):
    """Raised by ``receive(timeout=...)`` when no (matching) message arrived in time."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no message within {timeout:g}s")
        self.timeout = timeout

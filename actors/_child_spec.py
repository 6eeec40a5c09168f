"""Child specifications and the records supervisors answer with.

Kept apart from the supervisor behaviour so that anything building specs
(``GenServer.child_spec``, ``worker``) needs nothing but this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ._errors import StartError
from ._process import Process, ProcessFn
from ._types import Pid

PERMANENT = "permanent"
TRANSIENT = "transient"
TEMPORARY = "temporary"
BRUTAL_KILL = "brutal_kill"
INFINITY = "infinity"
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
NEVER = "never"
ANY_SIGNIFICANT = "any_significant"
ALL_SIGNIFICANT = "all_significant"
AUTO_SHUTDOWNS = (NEVER, ANY_SIGNIFICANT, ALL_SIGNIFICANT)
WORKER_SHUTDOWN = 5.0
"""A worker's default shutdown, in seconds (OTP's 5000 ms)."""

StartFn = Callable[..., Awaitable[Pid | None]]
"""``async def start(parent: Process, *extra) -> Pid | None``: start a child
linked to ``parent`` and return its pid (None means ignore)."""


class _ByType:
    """ChildSpec.shutdown's default: chosen by the child's type."""

    def __repr__(self) -> str:
        return "<5.0 for a worker, 'infinity' for a supervisor>"


_BY_TYPE: Any = _ByType()


@dataclass(frozen=True)
class ChildSpec:
    """How to start, restart and stop one child."""

    id: Hashable
    """Unique among the supervisor's children."""
    start: StartFn
    """Starts the child linked to the supervisor (see :data:`StartFn`)."""
    restart: str = PERMANENT
    """``permanent`` (always restarted), ``transient`` (restarted unless it exits
    ``normal``/``shutdown``) or ``temporary`` (never restarted)."""
    shutdown: float | str = field(default=_BY_TYPE)
    """Seconds to wait after ``shutdown`` before ``kill``; or ``brutal_kill``;
    or ``infinity``. Default, as OTP: 5 s for a worker, ``infinity`` for a
    supervisor (a subtree needs the time to stop its own children)."""
    type: str = "worker"
    """``worker`` or ``supervisor``."""
    label: str | None = None
    """Display tag for observers (e.g. ``SessionWorker``)."""
    significant: bool = False
    """When its exit (by itself, not by the supervisor) may shut the supervisor
    down, see the supervisor's ``auto_shutdown``. Only for ``transient`` and
    ``temporary`` children, and only under a supervisor whose ``auto_shutdown``
    is not ``never``."""

    def __post_init__(self) -> None:
        if self.restart not in (PERMANENT, TRANSIENT, TEMPORARY):
            raise ValueError(f"bad restart type {self.restart!r}")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"bad child type {self.type!r}")
        if self.shutdown is _BY_TYPE:
            object.__setattr__(self, "shutdown", INFINITY if self.type == "supervisor" else WORKER_SHUTDOWN)
        sd = self.shutdown
        if not (
            sd in (BRUTAL_KILL, INFINITY) or (isinstance(sd, int | float) and not isinstance(sd, bool) and sd >= 0)
        ):
            raise ValueError(f"bad shutdown {sd!r}")
        if not isinstance(self.significant, bool):
            raise ValueError(f"bad significant {self.significant!r} (True or False)")
        if self.significant and self.restart == PERMANENT:
            raise ValueError("bad combination: a permanent child cannot be significant (OTP's bad_combination)")


def worker(
    id: Hashable,
    fn: ProcessFn,
    *args: Any,
    restart: str = PERMANENT,
    shutdown: float | str = WORKER_SHUTDOWN,
    label: str | None = None,
    significant: bool = False,
) -> ChildSpec:
    """A child spec for a plain process body ``fn(proc, *args, *extra)``."""

    async def start_fn(parent: Process, *extra: Any) -> Pid | None:
        return parent.spawn_link(fn, *args, *extra, label=label or getattr(fn, "__name__", None))

    tag = label or getattr(fn, "__name__", None)
    return ChildSpec(id, start_fn, restart, shutdown, "worker", tag, significant)


async def _start_not_kept(parent: Process, *extra: Any) -> Pid | None:
    raise StartError("the start function of a temporary child is not kept")


def without_start(spec: ChildSpec) -> ChildSpec:
    """``spec`` with its start function (and what it holds) let go: what a
    supervisor keeps of a running temporary child, which is never restarted
    (OTP stores its start arguments as ``undefined``)."""
    return replace(spec, start=_start_not_kept)


def spec_error(spec: ChildSpec, auto_shutdown: str) -> Any:
    """Why ``spec`` cannot go under a supervisor with ``auto_shutdown``, or None."""
    if spec.significant and auto_shutdown == NEVER:
        return ("bad_combination", (("auto_shutdown", NEVER), ("significant", True)))
    return None


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of :func:`which_children`."""

    id: Hashable
    """Child id (None for simple_one_for_one children)."""
    pid: Pid | None
    """Its pid, or None if not running (or while ``restarting``)."""
    type: str
    """``worker`` or ``supervisor``."""
    restarts: int
    """Times it was restarted."""
    restarting: bool = False
    """True while a failed restart is retried (OTP shows ``restarting`` in place
    of the pid); ``pid`` is None then."""


class Budget(NamedTuple):
    """A supervisor's restart intensity and how much of it is used now. A
    named tuple: every crash report reads one, on the node's loop, and a
    frozen dataclass costs an ``object.__setattr__`` per field."""

    used: int
    """Restarts within the last ``period`` seconds."""
    intensity: int
    """Restarts allowed per period; one more makes the supervisor give up."""
    period: float
    """The period, in seconds."""
    strategy: str
    """The restart strategy."""

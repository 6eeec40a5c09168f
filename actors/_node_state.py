"""What a node owns, and the lookups every part of it uses.

:class:`NodeState` holds the process table, the name registry, the pid and
ref counters and the instruments; it answers "which live process is this pid
or name" and tells instruments about events. The exit-signal machinery
(:mod:`actors._signals`), the gen_server call protocol (:mod:`actors._calls`)
and :class:`~actors.Node` itself build on it. Threading rules are the node's
(see :mod:`actors._node`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ._errors import NameTaken, NoProcess
from ._events import Event, Instrument, Registered
from ._messages import CallMsg
from ._process import Process
from ._types import Pid, Ref

log = logging.getLogger("actors")


class NodeState:
    """The state of a :class:`~actors.Node` (see its docstring for the arguments)."""

    def __init__(
        self,
        *,
        node_id: int = 0,
        clock: Callable[[], float] = time.monotonic,
        log_crashes: bool = True,
        crash_reports: bool = True,
    ) -> None:
        self.node_id = node_id
        self._node_pid = Pid(node_id, 0)
        """``<N.0.0>``, the node itself as a signal's sender (one object, not one per server)."""
        self.clock = clock
        self.log_crashes = log_crashes
        self.crash_reports = crash_reports
        self._loop: asyncio.AbstractEventLoop | None = None
        self._procs: dict[int, Process] = {}
        self._names: dict[str, Process] = {}
        self._serial = itertools.count(1)
        self._refs = itertools.count(1)
        self._instruments: list[Any] = []
        self._signals: deque[tuple[Process, Pid, Any, bool]] = deque()
        self._draining = False
        self._dying: set[asyncio.Task[Any]] = set()
        self._calls: dict[CallMsg, tuple[float, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.started_at = time.time()
        self.restarts_total = 0
        """Children restarted by this node's supervisors since the node started
        (kept by the runtime itself: no instrument needed)."""
        self.crashes_total = 0
        """Processes that exited with an exception as their reason since the node started."""

    # -- loop ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop this node runs on (bound on first use inside a loop)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- lookups ----------------------------------------------------------------------

    def _get(self, target: Pid | str) -> Process | None:
        if type(target) is Pid:
            p = self._procs.get(target.id)
            if p is not None and (p.pid is target or p.pid == target):
                return p
            return None
        return self._names.get(target)  # type: ignore[arg-type]

    def process(self, target: Pid | str) -> Process:
        """The live :class:`Process` for a pid or name; raises :class:`NoProcess`.

        For the runtime's own behaviours and for introspection; user code talks
        to other processes through pids.
        """
        p = self._get(target)
        if p is None:
            raise NoProcess(target)
        return p

    def is_alive(self, target: Pid | str) -> bool:
        """True if the pid (or name) names a live process."""
        return self._get(target) is not None

    def make_ref(self) -> Ref:
        """A new unique reference."""
        return Ref(self.node_id, next(self._refs))

    # -- registry --------------------------------------------------------------------

    def register(self, name: str, pid: Pid) -> None:
        """Register ``name`` for a live pid. Raises :class:`NameTaken` or :class:`NoProcess`."""
        p = self._get(pid)
        if p is None:
            raise NoProcess(pid)
        holder = self._names.get(name)
        if holder is not None:
            raise NameTaken(name, holder.pid)
        if p.name is not None:
            raise NameTaken(name, p.pid, f"{pid} is already registered as {p.name!r}")
        self._names[name] = p
        p.name = name
        if self._instruments:
            self._emit(Registered(name, pid, time.time()))

    def unregister(self, name: str) -> None:
        """Remove a registered name. Raises :class:`NoProcess` if it is not registered."""
        p = self._names.pop(name, None)
        if p is None:
            raise NoProcess(name)
        p.name = None
        if self._instruments:
            self._emit(Registered(name, None, time.time()))

    def whereis(self, name: str) -> Pid | None:
        """The pid registered under ``name``, or None."""
        p = self._names.get(name)
        return p.pid if p is not None else None

    def registered(self) -> list[str]:
        """All registered names."""
        return list(self._names)

    # -- instruments -----------------------------------------------------------------------------

    def add_instrument(self, instrument: Instrument | Any) -> None:
        """Register an instrument (see :class:`Instrument`). Call on the loop thread."""
        self._instruments = [*self._instruments, instrument]

    def remove_instrument(self, instrument: Instrument | Any) -> None:
        """Unregister an instrument; no-op if it is not registered."""
        self._instruments = [i for i in self._instruments if i is not instrument]

    def _emit(self, event: Event) -> None:
        for inst in self._instruments:
            try:
                method = getattr(inst, event.hook, None)
                if method is not None:
                    method(event)
            except Exception:
                log.exception("instrument %r raised on %s; removing it", inst, event.hook)
                self.remove_instrument(inst)

    # -- listing ---------------------------------------------------------------------------

    def processes(self) -> list[Pid]:
        """Pids of every live process (a copy; safe from any thread)."""
        return [p.pid for p in list(self._procs.values())]

    def iter_processes(self) -> Iterator[Process]:
        """Every live :class:`Process` (over a copy; safe from any thread)."""
        return iter(list(self._procs.values()))

    def process_count(self) -> int:
        """How many processes are alive."""
        return len(self._procs)

"""Supervisors with OTP's semantics.

A supervisor is a gen_server that traps exits, starts its children in order
and stops them in reverse order, and restarts them by its strategy:

* ``one_for_one``: only the child that exited is restarted;
* ``one_for_all``: every other child is stopped (reverse order), then all are
  started again in order;
* ``rest_for_one``: the children started after it are stopped (reverse
  order), then it and they are started again in order;
* ``simple_one_for_one``: one child spec is a template; children are added
  with :func:`start_child` and are all alike (a dynamic supervisor).

Restart intensity: if more than ``intensity`` restarts happen within
``period`` seconds (defaults 1 and 5, as OTP), the supervisor stops all its
children and exits with ``shutdown``; its own supervisor then handles that
exit (escalation). A restart whose start fails counts as another restart and
is retried from the mailbox, so the supervisor keeps answering meanwhile.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import ActorError, ReceiveTimeout, StartError
from ._events import Restarted, SupervisorGaveUp
from ._gen_server import GenServer, Ignore, NoReply, Reply, Stop, start, start_link
from ._messages import From
from ._node import Node
from ._process import Process, ProcessFn
from ._types import KILL, SHUTDOWN, Down, Exit, Pid, is_normal_shutdown

PERMANENT = "permanent"
TRANSIENT = "transient"
TEMPORARY = "temporary"
BRUTAL_KILL = "brutal_kill"
INFINITY = "infinity"
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")

StartFn = Callable[..., Awaitable[Pid | None]]
"""``async def start(parent: Process, *extra) -> Pid | None``: start a child
linked to ``parent`` and return its pid (None means ignore)."""


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
    shutdown: float | str = 5.0
    """Seconds to wait after ``shutdown`` before ``kill``; or ``brutal_kill``;
    or ``infinity`` (the default for supervisors)."""
    type: str = "worker"
    """``worker`` or ``supervisor``."""
    label: str | None = None
    """Display tag for observers (e.g. ``SessionWorker``)."""

    def __post_init__(self) -> None:
        if self.restart not in (PERMANENT, TRANSIENT, TEMPORARY):
            raise ValueError(f"bad restart type {self.restart!r}")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"bad child type {self.type!r}")
        sd = self.shutdown
        if not (sd in (BRUTAL_KILL, INFINITY) or (isinstance(sd, int | float) and sd >= 0)):
            raise ValueError(f"bad shutdown {sd!r}")


def worker(
    id: Hashable,
    fn: ProcessFn,
    *args: Any,
    restart: str = PERMANENT,
    shutdown: float | str = 5.0,
    label: str | None = None,
) -> ChildSpec:
    """A child spec for a plain process body ``fn(proc, *args, *extra)``."""

    async def start_fn(parent: Process, *extra: Any) -> Pid | None:
        return parent.spawn_link(fn, *args, *extra, label=label or getattr(fn, "__name__", None))

    return ChildSpec(id, start_fn, restart, shutdown, "worker", label or getattr(fn, "__name__", None))


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of :func:`which_children`."""

    id: Hashable
    """Child id (None for simple_one_for_one children)."""
    pid: Pid | None
    """Its pid, or None if not running."""
    type: str
    """``worker`` or ``supervisor``."""
    restarts: int
    """Times it was restarted."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A supervisor's restart intensity and how much of it is used now."""

    used: int
    """Restarts within the last ``period`` seconds."""
    intensity: int
    """Restarts allowed per period; one more makes the supervisor give up."""
    period: float
    """The period, in seconds."""
    strategy: str
    """The restart strategy."""


@dataclass
class _Child:
    spec: ChildSpec
    pid: Pid | None = None
    restarts: int = 0
    extra: tuple[Any, ...] = field(default_factory=tuple)
    restarting: bool = False
    """A restart failed and is retried from the mailbox (OTP's ``{restarting, Pid}``)."""


@dataclass(frozen=True, slots=True)
class _TryAgain:
    child_id: Any
    pid_hint: Pid | None


@dataclass(frozen=True, slots=True)
class _TryAgainDynamic:
    child: _Child
    pid_hint: Pid | None


class Supervisor(GenServer):
    """The supervisor behaviour. Start one with :func:`start_supervisor` /
    :func:`start_supervisor_link` or nest it with :func:`supervisor_spec`.

    Subclass and override :meth:`children` to build the child specs from the
    start arguments, or pass ``children=`` to the start functions.
    """

    kind = "supervisor"

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: str = "one_for_one",
        intensity: int = 1,
        period: float = 5.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"bad strategy {strategy!r}")
        if intensity < 0 or period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0")
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self._specs = list(children)
        self._children: dict[Hashable, _Child] = {}
        self._by_pid: dict[Pid, Hashable] = {}
        self._dynamic: dict[Pid, _Child] = {}
        self._restarts: deque[float] = deque()

    def children(self, *args: Any) -> Sequence[ChildSpec] | Ignore:
        """The child specs, in start order. Default: those given to the constructor.

        Return :class:`Ignore` to not start at all (OTP's ``init`` returning
        ``ignore``): the starter gets None."""
        return self._specs

    # -- introspection (read-only, any thread) ---------------------------------------

    def budget(self) -> Budget:
        """Restarts used in the current period, without changing anything."""
        now = self.proc.node.clock()
        r = self._restarts  # oldest first; pruned of stale entries at each restart
        stale = 0
        try:  # by index, not by iterating: another thread may read while the loop appends
            while now - r[stale] > self.period:
                stale += 1
        except IndexError:
            pass
        return Budget(max(0, len(r) - stale), self.intensity, self.period, self.strategy)

    def child_rows(self) -> list[ChildInfo]:
        if self.strategy == "simple_one_for_one":
            return [ChildInfo(None, pid, c.spec.type, c.restarts) for pid, c in list(self._dynamic.items())]
        return [ChildInfo(cid, c.pid, c.spec.type, c.restarts) for cid, c in list(self._children.items())]

    # -- gen_server callbacks --------------------------------------------------------------

    async def init(self, *args: Any) -> Any:
        proc = self.proc
        proc.trap_exit = True
        children = self.children(*args)
        if isinstance(children, Ignore):
            return children
        specs = list(children)
        if self.strategy == "simple_one_for_one":
            if len(specs) != 1:
                return Stop(("bad_child_specs", "simple_one_for_one needs exactly one child spec"))
            self._template = specs[0]
            return None
        ids = [s.id for s in specs]
        if len(set(ids)) != len(ids):
            return Stop(("bad_child_specs", "duplicate child id"))
        for spec in specs:
            child = _Child(spec)
            self._children[spec.id] = child
            try:
                await self._start_child(child)
            except Exception as exc:
                await self._terminate_all()
                return Stop((SHUTDOWN, ("failed_to_start_child", spec.id, _reason(exc))))
        return None

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        op, *args = request if isinstance(request, tuple) else (request,)
        handler = _CALLS.get(op)
        if handler is None:
            return Reply(_error(("unknown_call", op)), state)
        try:
            return Reply(await handler(self, *args), state)
        except _SupError as err:
            return Reply(_error(err.reason), state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        t = type(msg)
        if t is Exit:
            return await self._child_exited(msg.pid, msg.reason, state)
        if t is _TryAgain:
            return await self._try_again(msg, state)
        if t is _TryAgainDynamic:
            return await self._restart_dynamic(msg.child, msg.pid_hint, state)
        return await super().handle_info(msg, state)

    async def terminate(self, reason: Any, state: Any) -> None:
        await self._terminate_all()

    # -- starting ---------------------------------------------------------------------------------

    async def _start_child(self, child: _Child) -> Pid | None:
        proc = self.proc
        proc._adopting = (None if self.strategy == "simple_one_for_one" else child.spec.id, child.restarts)
        try:
            pid = await child.spec.start(proc, *child.extra)
        finally:
            proc._adopting = None
        if pid is not None and not isinstance(pid, Pid):
            raise StartError(("bad_return", pid))
        child.pid = pid
        child.restarting = False
        if pid is not None:
            # Record the pid even if the child already died (it may crash right
            # after acknowledging its start): its Exit message is then in our
            # mailbox and must find the child, or the exit is lost.
            if self.strategy == "simple_one_for_one":
                self._dynamic[pid] = child
            else:
                self._by_pid[pid] = child.spec.id
            p = self.proc.node._get(pid)
            if p is not None:
                p.supervisor = self.proc.pid
                p.child_id = child.spec.id if self.strategy != "simple_one_for_one" else None
                p.restarts = child.restarts
                if child.spec.label and p.label != child.spec.label:
                    p.label = child.spec.label
        return pid

    # -- stopping ------------------------------------------------------------------------------------

    async def _shutdown_child(self, child: _Child) -> None:
        child.restarting = False  # a pending retry must not bring it back
        pid = child.pid
        if pid is None:
            return
        child.pid = None
        self._by_pid.pop(pid, None)
        self._dynamic.pop(pid, None)
        await _stop_pids(self.proc, [pid], child.spec.shutdown)

    async def _terminate_all(self) -> None:
        if self.strategy == "simple_one_for_one":
            pids = list(self._dynamic)
            self._dynamic.clear()
            if pids:
                await _stop_pids(self.proc, pids, self._template.shutdown)
            return
        for child in reversed(list(self._children.values())):
            await self._shutdown_child(child)

    # -- restarting ------------------------------------------------------------------------------------

    def _add_restart(self) -> bool:
        """Record a restart; False if that exceeds the intensity (give up)."""
        now = self.proc.node.clock()
        r = self._restarts
        r.append(now)
        while r and now - r[0] > self.period:
            r.popleft()
        return len(r) <= self.intensity

    def _give_up(self, child_id: Any, state: Any) -> Stop:
        node = self.proc.node
        if node._instruments:
            node._emit(
                SupervisorGaveUp(self.proc.pid, child_id, len(self._restarts), self.intensity, self.period, time.time())
            )
        return Stop(SHUTDOWN, state)

    async def _child_exited(self, pid: Pid, reason: Any, state: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            child = self._dynamic.pop(pid, None)
            if child is None:
                return state
            if not _should_restart(child.spec.restart, reason):
                return state
            if not self._add_restart():
                return self._give_up(None, state)
            child.pid = None
            child.restarts += 1
            return await self._restart_dynamic(child, pid, state)
        cid = self._by_pid.pop(pid, None)
        if cid is None:
            return state  # not a child (and not the parent: the loop handles that)
        child = self._children[cid]
        child.pid = None
        if not _should_restart(child.spec.restart, reason):
            if child.spec.restart == TEMPORARY:
                del self._children[cid]
            return state
        if not self._add_restart():
            return self._give_up(cid, state)
        return await self._restart(cid, pid, state)

    async def _restart_dynamic(self, child: _Child, old: Pid | None, state: Any) -> Any:
        try:
            new = await self._start_child(child)
        except Exception:
            if not self._add_restart():
                return self._give_up(None, state)
            self.proc.node.send(self.proc.pid, _TryAgainDynamic(child, old))
            return state
        self._emit_restart(None, old, new, child.restarts)
        return state

    async def _restart(self, cid: Hashable, old: Pid | None, state: Any) -> Any:
        """Restart ``cid`` by the strategy (its old pid has already exited)."""
        order = list(self._children)
        if self.strategy == "one_for_one":
            group = [cid]
        elif self.strategy == "one_for_all":
            group = order
        else:  # rest_for_one
            group = order[order.index(cid) :]
        for other in reversed(group):
            if other != cid:
                await self._shutdown_child(self._children[other])
        for gid in group:
            child = self._children.get(gid)
            if child is None:
                continue
            if gid != cid and child.spec.restart == TEMPORARY:
                del self._children[gid]
                continue
            if child.pid is not None:
                continue
            child.restarts += 1
            old_pid = old if gid == cid else None
            try:
                new = await self._start_child(child)
            except Exception:
                if not self._add_restart():
                    return self._give_up(gid, state)
                child.restarting = True
                self.proc.node.send(self.proc.pid, _TryAgain(gid, old_pid))
                return state
            self._emit_restart(gid, old_pid, new, child.restarts)
        return state

    async def _try_again(self, msg: _TryAgain, state: Any) -> Any:
        child = self._children.get(msg.child_id)
        if child is None or child.pid is not None or not child.restarting:
            return state  # deleted, restarted or terminated meanwhile
        child.restarts -= 1  # _restart counts it again
        return await self._restart(msg.child_id, msg.pid_hint, state)

    def _emit_restart(self, cid: Any, old: Pid | None, new: Pid | None, count: int) -> None:
        node = self.proc.node
        if node._instruments:
            node._emit(Restarted(self.proc.pid, cid, old, new, count, time.time()))

    # -- calls ----------------------------------------------------------------------------------------------

    async def _call_start_child(self, arg: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            extra = tuple(arg) if isinstance(arg, list | tuple) else (arg,)
            child = _Child(self._template, extra=extra)
            try:
                return ("ok", await self._start_child(child))
            except Exception as exc:
                return _error(_reason(exc))
        spec = arg
        if not isinstance(spec, ChildSpec):
            raise _SupError(("bad_child_spec", repr(spec)))
        if spec.id in self._children:
            c = self._children[spec.id]
            raise _SupError(("already_started", c.pid) if c.pid is not None else "already_present")
        child = _Child(spec)
        try:
            pid = await self._start_child(child)
        except Exception as exc:
            return _error(_reason(exc))
        self._children[spec.id] = child
        return ("ok", pid)

    async def _call_terminate_child(self, key: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            child = self._dynamic.get(key) if isinstance(key, Pid) else None
            if child is None:
                raise _SupError("not_found")
            await self._shutdown_child_pid(key, child)
            return "ok"
        child = self._children.get(key)
        if child is None:
            raise _SupError("not_found")
        await self._shutdown_child(child)
        if child.spec.restart == TEMPORARY:
            del self._children[key]
        return "ok"

    async def _shutdown_child_pid(self, pid: Pid, child: _Child) -> None:
        self._dynamic.pop(pid, None)
        await _stop_pids(self.proc, [pid], child.spec.shutdown)

    async def _call_restart_child(self, cid: Any) -> Any:
        self._no_dynamic()
        child = self._children.get(cid)
        if child is None:
            raise _SupError("not_found")
        if child.pid is not None:
            raise _SupError("running")
        if child.restarting:
            raise _SupError("restarting")
        try:
            pid = await self._start_child(child)
        except Exception as exc:
            return _error(_reason(exc))
        return ("ok", pid)

    async def _call_delete_child(self, cid: Any) -> Any:
        self._no_dynamic()
        child = self._children.get(cid)
        if child is None:
            raise _SupError("not_found")
        if child.pid is not None:
            raise _SupError("running")
        if child.restarting:
            raise _SupError("restarting")
        del self._children[cid]
        return "ok"

    async def _call_which_children(self) -> Any:
        return self.child_rows()

    async def _call_count_children(self) -> Any:
        rows = self.child_rows()
        return {
            "specs": 1 if self.strategy == "simple_one_for_one" else len(rows),
            "active": sum(1 for r in rows if r.pid is not None),
            "supervisors": sum(1 for r in rows if r.type == "supervisor"),
            "workers": sum(1 for r in rows if r.type == "worker"),
        }

    async def _call_budget(self) -> Any:
        return self.budget()

    def _no_dynamic(self) -> None:
        if self.strategy == "simple_one_for_one":
            raise _SupError("simple_one_for_one")


_CALLS: dict[str, Callable[..., Awaitable[Any]]] = {
    "start_child": Supervisor._call_start_child,
    "terminate_child": Supervisor._call_terminate_child,
    "restart_child": Supervisor._call_restart_child,
    "delete_child": Supervisor._call_delete_child,
    "which_children": Supervisor._call_which_children,
    "count_children": Supervisor._call_count_children,
    "budget": Supervisor._call_budget,
}


class _SupError(Exception):
    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def _error(reason: Any) -> tuple[str, Any]:
    return ("error", reason)


def _reason(exc: BaseException) -> Any:
    return exc.reason if isinstance(exc, StartError) else exc


def _should_restart(restart: str, reason: Any) -> bool:
    if restart == PERMANENT:
        return True
    if restart == TEMPORARY:
        return False
    return not is_normal_shutdown(reason)


async def _stop_pids(sup: Process, pids: list[Pid], shutdown: float | str) -> None:
    """Stop children as OTP does: monitor, unlink, flush their EXIT, send
    ``shutdown`` (or ``kill``), wait for DOWN up to the timeout, then ``kill``."""
    node = sup.node
    refs: dict[Any, Pid] = {}
    for pid in pids:
        ref = sup.monitor(pid)
        sup.unlink(pid)
        refs[ref] = pid
    gone = set(pids)
    sup.drop(lambda m: type(m) is Exit and m.pid in gone)
    reason = KILL if shutdown == BRUTAL_KILL else SHUTDOWN
    for pid in pids:
        node.exit(pid, reason, sender=sup.pid)
    pending = set(refs)

    def is_down(m: Any) -> bool:
        return type(m) is Down and m.ref in pending

    deadline = None if shutdown in (BRUTAL_KILL, INFINITY) else node.loop.time() + float(shutdown)
    while pending:
        if deadline is None:
            msg = await sup.receive(is_down)
        else:
            left = deadline - node.loop.time()
            try:
                msg = await sup.receive(is_down, timeout=max(left, 0.0))
            except ReceiveTimeout:
                for ref in pending:
                    node.exit(refs[ref], KILL, sender=sup.pid)
                deadline = None
                continue
        pending.discard(msg.ref)


# -- client API ------------------------------------------------------------------------------------------------


async def start_supervisor(
    node: Node,
    children: Sequence[ChildSpec] = (),
    *,
    strategy: str = "one_for_one",
    intensity: int = 1,
    period: float = 5.0,
    name: str | None = None,
    label: str | None = None,
) -> Pid:
    """Start a top-level supervisor and its children; returns its pid.

    Raises :class:`StartError` if a child failed to start (the ones already
    started are stopped again)."""
    pid = await start(
        node,
        Supervisor(children, strategy=strategy, intensity=intensity, period=period),
        name=name,
        label=label or "Supervisor",
        timeout=None,
    )
    assert pid is not None
    return pid


def supervisor_spec(
    id: Hashable,
    children: Sequence[ChildSpec] | Callable[[], Supervisor],
    *,
    strategy: str = "one_for_one",
    intensity: int = 1,
    period: float = 5.0,
    restart: str = PERMANENT,
    name: str | None = None,
    label: str | None = None,
) -> ChildSpec:
    """A child spec for a nested supervisor (shutdown ``infinity``).

    ``children`` is a list of specs, or a zero-argument factory returning a
    :class:`Supervisor` (a subclass, say), called at every (re)start."""

    async def start_fn(parent: Process, *extra: Any) -> Pid | None:
        if callable(children) and not isinstance(children, Sequence):
            sup = children()
        else:
            sup = Supervisor(children, strategy=strategy, intensity=intensity, period=period)
        return await start_link(parent, sup, *extra, name=name, label=label or "Supervisor", timeout=None)

    return ChildSpec(id, start_fn, restart, INFINITY, "supervisor", label or "Supervisor")


async def _sup_call(node: Node, sup: Pid | str, request: tuple[Any, ...], timeout: float | None) -> Any:
    return await node.call(sup, request, timeout=timeout)


def _unwrap(res: Any) -> Any:
    if isinstance(res, tuple) and len(res) == 2 and res[0] == "error":
        raise SupervisorError(res[1])
    if isinstance(res, tuple) and len(res) == 2 and res[0] == "ok":
        return res[1]
    return res


class SupervisorError(ActorError):
    """Raised by the supervisor client functions when the supervisor refused
    the request; ``reason`` is OTP-like (``not_found``, ``running``,
    ``already_present``, ``("already_started", pid)``, a start failure...)."""

    def __init__(self, reason: Any) -> None:
        super().__init__(f"supervisor refused: {reason!r}")
        self.reason = reason


async def start_child(node: Node, sup: Pid | str, spec_or_args: Any, *, timeout: float | None = 5.0) -> Pid | None:
    """Add and start a child: a :class:`ChildSpec`, or for simple_one_for_one the
    extra start arguments (a tuple or list, or one value)."""
    return _unwrap(await _sup_call(node, sup, ("start_child", spec_or_args), timeout))


async def terminate_child(node: Node, sup: Pid | str, child: Any, *, timeout: float | None = 5.0) -> None:
    """Stop a child by id (or by pid, for simple_one_for_one). It is not
    restarted; its spec stays (except temporary ones) for :func:`restart_child`."""
    _unwrap(await _sup_call(node, sup, ("terminate_child", child), timeout))


async def restart_child(node: Node, sup: Pid | str, child_id: Any, *, timeout: float | None = 5.0) -> Pid | None:
    """Start again a child that was terminated (its spec kept)."""
    return _unwrap(await _sup_call(node, sup, ("restart_child", child_id), timeout))


async def delete_child(node: Node, sup: Pid | str, child_id: Any, *, timeout: float | None = 5.0) -> None:
    """Remove the spec of a terminated child."""
    _unwrap(await _sup_call(node, sup, ("delete_child", child_id), timeout))


async def which_children(node: Node, sup: Pid | str, *, timeout: float | None = 5.0) -> list[ChildInfo]:
    """The children, in start order."""
    return await _sup_call(node, sup, ("which_children",), timeout)


async def count_children(node: Node, sup: Pid | str, *, timeout: float | None = 5.0) -> dict[str, int]:
    """Counts: ``specs``, ``active``, ``supervisors``, ``workers``."""
    return await _sup_call(node, sup, ("count_children",), timeout)


def budget(node: Node, sup: Pid | str) -> Budget:
    """The restart budget of a supervisor, read directly (no message, any thread)."""
    b = node.process(sup).behaviour
    if not isinstance(b, Supervisor):
        raise SupervisorError("not_a_supervisor")
    return b.budget()

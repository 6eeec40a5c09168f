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
is retried from the mailbox, so the supervisor keeps answering meanwhile; the
child shows as ``restarting`` until then.

Automatic shutdown (``auto_shutdown``, as OTP's): ``never`` (the default),
``any_significant`` (the supervisor exits ``shutdown`` once any child marked
``significant`` ends by itself and is not restarted) or ``all_significant``
(once the last of them has). The client functions are in
:mod:`actors._supervisor_api`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

from ._child_spec import (
    ALL_SIGNIFICANT,
    AUTO_SHUTDOWNS,
    INFINITY,
    NEVER,
    PERMANENT,
    STRATEGIES,
    TEMPORARY,
    Budget,
    ChildInfo,
    ChildSpec,
    without_start,
)
from ._errors import StartError
from ._events import Restarted, SupervisorGaveUp
from ._gen_server import GenServer, Ignore, NoReply, Reply, Stop, start_link
from ._messages import From
from ._process import Process
from ._sup_calls import CALLS
from ._sup_children import (
    Child,
    SupError,
    TryAgain,
    TryAgainDynamic,
    check_startspec,
    error,
    should_restart,
    start_failure,
    stop_pids,
)
from ._types import SHUTDOWN, Exit, Pid

__all__ = ["ChildSpec", "Supervisor"]  # ChildSpec: for ``GenServer.child_spec``


class Supervisor(GenServer):
    """The supervisor behaviour. Start one with :func:`start_supervisor`, or
    nest it with :func:`supervisor_spec` or :meth:`child_spec`.

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
        auto_shutdown: str = NEVER,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"bad strategy {strategy!r}")
        if intensity < 0 or period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0")
        if auto_shutdown not in AUTO_SHUTDOWNS:
            raise ValueError(f"bad auto_shutdown {auto_shutdown!r} (one of {', '.join(AUTO_SHUTDOWNS)})")
        if strategy == "simple_one_for_one" and auto_shutdown != NEVER:
            raise ValueError("bad combination: simple_one_for_one takes no auto_shutdown (as OTP)")
        self.strategy = strategy
        self.intensity = intensity
        self.period = period
        self.auto_shutdown = auto_shutdown
        self._specs: Sequence[ChildSpec] = list(children)
        self._children: dict[Hashable, Child] = {}
        self._by_pid: dict[Pid, Hashable] = {}
        self._dynamic: dict[Pid, Child] = {}
        """simple_one_for_one children by pid; a restarting one by its old pid."""
        self._restarts: deque[float] = deque()

    def children(self, *args: Any) -> Sequence[ChildSpec] | Ignore:
        """The child specs, in start order. Default: those given to the constructor.

        Return :class:`Ignore` to not start at all (OTP's ``init`` returning
        ``ignore``): the starter gets None and the supervisor exits ``normal``."""
        return self._specs

    @classmethod
    def child_spec(
        cls,
        *args: Any,
        id: Any = None,
        name: str | None = None,
        restart: str = PERMANENT,
        shutdown: float | str = INFINITY,
        label: str | None = None,
        significant: bool = False,
    ) -> ChildSpec:
        """A child spec that starts this supervisor with ``children(*args)``;
        its shutdown defaults to ``infinity``, as OTP's for supervisors."""

        async def start_fn(parent: Process, *extra: Any) -> Pid | None:
            return await start_link(parent, cls, *args, *extra, name=name, label=label, timeout=None)

        cid = id if id is not None else (name or cls.__name__)
        return ChildSpec(cid, start_fn, restart, shutdown, "supervisor", label or cls.__name__, significant)

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
        """The children, in start order; a child whose restart is being
        retried shows ``restarting`` and no pid."""
        if self.strategy == "simple_one_for_one":
            return [
                ChildInfo(None, None if c.restarting else pid, c.spec.type, c.restarts, c.restarting)
                for pid, c in list(self._dynamic.items())
            ]
        return [ChildInfo(cid, c.pid, c.spec.type, c.restarts, c.restarting) for cid, c in list(self._children.items())]

    # -- gen_server callbacks --------------------------------------------------------------

    async def init(self, *args: Any) -> Any:
        proc = self.proc
        proc.trap_exit = True
        children = self.children(*args)
        self._specs = ()  # the records below hold what is needed; nothing more is kept
        if isinstance(children, Ignore):
            return children
        specs = list(children)
        simple = self.strategy == "simple_one_for_one"
        if simple and len(specs) != 1:
            return Stop(("bad_start_spec", specs))  # exactly one: the template
        err = check_startspec(specs, self.auto_shutdown)
        if err is not None:
            return Stop(("start_spec", err))
        if simple:
            self._template = specs[0]
            return None
        for spec in specs:
            child = Child(spec)
            self._children[spec.id] = child
            try:
                pid = await self._start_child(child)
            except Exception as exc:
                await self._terminate_all()
                return Stop((SHUTDOWN, ("failed_to_start_child", spec.id, start_failure(exc))))
            if pid is None and spec.restart == TEMPORARY:
                del self._children[spec.id]  # an ignored temporary child is not kept (OTP)
        return None

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        op, *args = request if isinstance(request, tuple) else (request,)
        handler = CALLS.get(op)
        if handler is None:
            return Reply(error(("unknown_call", op)), state)
        try:
            return Reply(await handler(self, *args), state)
        except SupError as err:
            return Reply(error(err.reason), state)

    async def handle_info(self, msg: Any, state: Any) -> Any:
        t = type(msg)
        if t is Exit:
            return await self._child_exited(msg.pid, msg.reason, state)
        if t is TryAgain:
            return await self._try_again(msg, state)
        if t is TryAgainDynamic:
            return await self._try_again_dynamic(msg, state)
        return await super().handle_info(msg, state)

    async def terminate(self, reason: Any, state: Any) -> None:
        await self._terminate_all()

    # -- starting ---------------------------------------------------------------------------------

    async def _start_child(self, child: Child) -> Pid | None:
        proc = self.proc
        simple = self.strategy == "simple_one_for_one"
        proc._adopting = (None if simple else child.spec.id, child.restarts)
        try:
            pid = await child.spec.start(proc, *child.extra)
        finally:
            proc._adopting = None
        if pid is not None and not isinstance(pid, Pid):
            raise StartError(("bad_return", pid))
        child.pid = pid
        child.restarting = False
        if child.spec.restart == TEMPORARY:
            # never restarted: keep no reference to its start arguments (OTP
            # stores them as undefined), so they live only as long as the child needs them
            if simple:
                child.extra = ()
            elif pid is not None:
                child.spec = without_start(child.spec)
        if pid is not None:
            # Record the pid even if the child already died (it may crash right
            # after acknowledging its start): its Exit message is then in our
            # mailbox and must find the child, or the exit is lost.
            if simple:
                self._dynamic[pid] = child
            else:
                self._by_pid[pid] = child.spec.id
            p = self.proc.node._get(pid)
            if p is not None:
                p.supervisor = self.proc.pid
                p.child_id = None if simple else child.spec.id
                p.restarts = child.restarts
                if child.spec.label and p.label != child.spec.label:
                    p.label = child.spec.label
        return pid

    # -- stopping ------------------------------------------------------------------------------------

    async def _shutdown_child(self, child: Child) -> None:
        child.restarting = False  # a pending retry must not bring it back
        pid = child.pid
        if pid is None:
            return
        child.pid = None
        self._by_pid.pop(pid, None)
        self._dynamic.pop(pid, None)
        await stop_pids(self.proc, [pid], child.spec.shutdown)

    async def _terminate_all(self) -> None:
        if self.strategy == "simple_one_for_one":
            pids = [pid for pid, c in self._dynamic.items() if not c.restarting]
            self._dynamic.clear()
            if pids:
                await stop_pids(self.proc, pids, self._template.shutdown)
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

    def _auto_shutdown(self, child: Child, state: Any) -> Any:
        """After ``child`` ended by itself and is not restarted: shut down if it
        was significant and the ``auto_shutdown`` flag says so (OTP's do_auto_shutdown)."""
        if self.auto_shutdown == NEVER or not child.spec.significant:
            return state
        if self.auto_shutdown == ALL_SIGNIFICANT and any(
            c.spec.significant and (c.pid is not None or c.restarting) for c in self._children.values()
        ):
            return state
        return Stop(SHUTDOWN, state)

    async def _child_exited(self, pid: Pid, reason: Any, state: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            child = self._dynamic.get(pid)
            if child is None or child.restarting:
                return state
            del self._dynamic[pid]
            if not should_restart(child.spec.restart, reason):
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
        if not should_restart(child.spec.restart, reason):
            if child.spec.restart == TEMPORARY:
                del self._children[cid]
            return self._auto_shutdown(child, state)
        if not self._add_restart():
            return self._give_up(cid, state)
        return await self._restart(cid, pid, state)

    async def _restart_dynamic(self, child: Child, old: Pid, state: Any) -> Any:
        """Start a simple_one_for_one child again; while that fails, it stays
        in the table as restarting, under its old pid, and is retried."""
        try:
            new = await self._start_child(child)
        except Exception:
            if not self._add_restart():
                return self._give_up(None, state)
            child.restarting = True
            self._dynamic[old] = child
            self.proc.node.send(self.proc.pid, TryAgainDynamic(old))
            return state
        self._dynamic.pop(old, None)  # its new pid is recorded (or it was ignored: gone)
        self._emit_restart(None, old, new, child.restarts)
        return state

    async def _try_again_dynamic(self, msg: TryAgainDynamic, state: Any) -> Any:
        child = self._dynamic.get(msg.old_pid)
        if child is None or not child.restarting:
            return state  # terminated meanwhile
        return await self._restart_dynamic(child, msg.old_pid, state)

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
                self.proc.node.send(self.proc.pid, TryAgain(gid, old_pid))
                return state
            self._emit_restart(gid, old_pid, new, child.restarts)
        return state

    async def _try_again(self, msg: TryAgain, state: Any) -> Any:
        child = self._children.get(msg.child_id)
        if child is None or child.pid is not None or not child.restarting:
            return state  # deleted, restarted or terminated meanwhile
        child.restarts -= 1  # _restart counts it again
        return await self._restart(msg.child_id, msg.pid_hint, state)

    def _emit_restart(self, cid: Any, old: Pid | None, new: Pid | None, count: int) -> None:
        node = self.proc.node
        node.restarts_total += 1
        if node._instruments:
            node._emit(Restarted(self.proc.pid, cid, old, new, count, time.time()))

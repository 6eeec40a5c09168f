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
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._child_spec import (
    ALL_SIGNIFICANT,
    AUTO_SHUTDOWNS,
    BRUTAL_KILL,
    INFINITY,
    NEVER,
    PERMANENT,
    STRATEGIES,
    TEMPORARY,
    Budget,
    ChildInfo,
    ChildSpec,
    spec_error,
    without_start,
)
from ._errors import NameTaken, ReceiveTimeout, StartError
from ._events import Restarted, SupervisorGaveUp
from ._gen_server import GenServer, Ignore, NoReply, Reply, Stop, start_link
from ._messages import From
from ._process import Process
from ._types import KILL, SHUTDOWN, Down, Exit, Pid, is_normal_shutdown

__all__ = ["ChildSpec", "Supervisor"]  # ChildSpec: for ``GenServer.child_spec``


@dataclass
class _Child:
    """The supervisor's record of one child (OTP's ``#child{}``)."""

    spec: ChildSpec
    pid: Pid | None = None
    restarts: int = 0
    extra: tuple[Any, ...] = field(default_factory=tuple)
    """simple_one_for_one: the start arguments (none kept for temporary children)."""
    restarting: bool = False
    """A restart failed and is retried from the mailbox (OTP's ``{restarting, Pid}``)."""


@dataclass(frozen=True, slots=True)
class _TryAgain:
    child_id: Any
    pid_hint: Pid | None


@dataclass(frozen=True, slots=True)
class _TryAgainDynamic:
    old_pid: Pid
    """The key of the restarting child: the pid it had before it exited."""


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
        self._children: dict[Hashable, _Child] = {}
        self._by_pid: dict[Pid, Hashable] = {}
        self._dynamic: dict[Pid, _Child] = {}
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
        err = _check_startspec(specs, self.auto_shutdown)
        if err is not None:
            return Stop(("start_spec", err))
        if simple:
            self._template = specs[0]
            return None
        for spec in specs:
            child = _Child(spec)
            self._children[spec.id] = child
            try:
                pid = await self._start_child(child)
            except Exception as exc:
                await self._terminate_all()
                return Stop((SHUTDOWN, ("failed_to_start_child", spec.id, _reason(exc))))
            if pid is None and spec.restart == TEMPORARY:
                del self._children[spec.id]  # an ignored temporary child is not kept (OTP)
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
            return await self._try_again_dynamic(msg, state)
        return await super().handle_info(msg, state)

    async def terminate(self, reason: Any, state: Any) -> None:
        await self._terminate_all()

    # -- starting ---------------------------------------------------------------------------------

    async def _start_child(self, child: _Child) -> Pid | None:
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
            pids = [pid for pid, c in self._dynamic.items() if not c.restarting]
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

    def _auto_shutdown(self, child: _Child, state: Any) -> Any:
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
            return self._auto_shutdown(child, state)
        if not self._add_restart():
            return self._give_up(cid, state)
        return await self._restart(cid, pid, state)

    async def _restart_dynamic(self, child: _Child, old: Pid, state: Any) -> Any:
        """Start a simple_one_for_one child again; while that fails, it stays
        in the table as restarting, under its old pid, and is retried."""
        try:
            new = await self._start_child(child)
        except Exception:
            if not self._add_restart():
                return self._give_up(None, state)
            child.restarting = True
            self._dynamic[old] = child
            self.proc.node.send(self.proc.pid, _TryAgainDynamic(old))
            return state
        self._dynamic.pop(old, None)  # its new pid is recorded (or it was ignored: gone)
        self._emit_restart(None, old, new, child.restarts)
        return state

    async def _try_again_dynamic(self, msg: _TryAgainDynamic, state: Any) -> Any:
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
            del extra, arg
            try:
                return ("ok", await self._start_child(child))
            except Exception as exc:
                return _error(_reason(exc))
        spec = arg
        if not isinstance(spec, ChildSpec):
            raise _SupError(("invalid_child_spec", spec))
        err = spec_error(spec, self.auto_shutdown)
        if err is not None:
            raise _SupError(err)
        if spec.id in self._children:
            c = self._children[spec.id]
            raise _SupError(("already_started", c.pid) if c.pid is not None else "already_present")
        child = _Child(spec)
        try:
            pid = await self._start_child(child)
        except Exception as exc:
            return _error(_reason(exc))
        if pid is not None or spec.restart != TEMPORARY:  # an ignored temporary child is not kept (OTP)
            self._children[spec.id] = child
        return ("ok", pid)

    async def _call_terminate_child(self, key: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            if not isinstance(key, Pid):
                raise _SupError("simple_one_for_one")  # its children are known by pid only
            child = self._dynamic.get(key)
            if child is None:
                if self.proc.node.is_alive(key):
                    raise _SupError("not_found")  # alive, but not ours
                return "ok"  # already gone: nothing to do (OTP)
            if child.restarting:
                child.restarting = False  # stops the retries: _try_again_dynamic finds nothing
                del self._dynamic[key]
                return "ok"
            self._dynamic.pop(key, None)
            await _stop_pids(self.proc, [key], child.spec.shutdown)
            return "ok"
        child = self._children.get(key)
        if child is None:
            raise _SupError("not_found")
        await self._shutdown_child(child)
        if child.spec.restart == TEMPORARY:
            del self._children[key]
        return "ok"

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

    async def _call_get_childspec(self, key: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            # as OTP's find_child: a child's pid (running or restarting), a pid
            # no longer alive, or the template's own id all name the template
            if isinstance(key, Pid):
                if key in self._dynamic or not self.proc.node.is_alive(key):
                    return ("ok", self._template)
            elif key == self._template.id:
                return ("ok", self._template)
            raise _SupError("not_found")
        child = self._children.get(key)
        if child is None:
            raise _SupError("not_found")
        return ("ok", child.spec)

    async def _call_which_child(self, key: Any) -> Any:
        if self.strategy == "simple_one_for_one":
            if not isinstance(key, Pid):
                raise _SupError("simple_one_for_one")
            child = self._dynamic.get(key)
            pid = None if child is None or child.restarting else key
            row = None if child is None else ChildInfo(None, pid, child.spec.type, child.restarts, child.restarting)
        else:
            child = self._children.get(key)
            row = (
                None if child is None else ChildInfo(key, child.pid, child.spec.type, child.restarts, child.restarting)
            )
        if row is None:
            raise _SupError("not_found")
        return ("ok", row)

    async def _call_which_children(self) -> Any:
        return self.child_rows()

    async def _call_count_children(self) -> Any:
        # as OTP: a static child counts as active only if its process is alive
        # (its EXIT may still wait in the mailbox); dynamic ones are not checked
        rows = self.child_rows()
        simple = self.strategy == "simple_one_for_one"
        alive = self.proc.node.is_alive
        return {
            "specs": 1 if simple else len(rows),
            "active": sum(1 for r in rows if r.pid is not None and (simple or alive(r.pid))),
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
    "get_childspec": Supervisor._call_get_childspec,
    "which_child": Supervisor._call_which_child,
    "which_children": Supervisor._call_which_children,
    "count_children": Supervisor._call_count_children,
    "budget": Supervisor._call_budget,
}


class _SupError(Exception):
    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_startspec(specs: list[Any], auto_shutdown: str) -> Any:
    """Why these init specs cannot start (OTP's check_startspec), or None."""
    seen: set[Hashable] = set()
    for s in specs:
        if not isinstance(s, ChildSpec):
            return ("invalid_child_spec", s)
        err = spec_error(s, auto_shutdown)
        if err is not None:
            return err
        if s.id in seen:
            return ("duplicate_child_name", s.id)  # OTP's name for it, kept for compatibility there
        seen.add(s.id)
    return None


def _error(reason: Any) -> tuple[str, Any]:
    return ("error", reason)


def _reason(exc: BaseException) -> Any:
    """A failed start as OTP's reason: the start's own, and a name already
    taken as ``("already_started", holder)``."""
    if isinstance(exc, StartError):
        return exc.reason
    holder = getattr(exc, "pid", None) if isinstance(exc, NameTaken) else None
    return ("already_started", holder) if holder is not None else exc


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

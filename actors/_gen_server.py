"""A gen_server-like behaviour: a process that owns a state and serves calls.

Subclass :class:`GenServer` and override the callbacks. All callbacks run
inside the server's own process, one at a time, in mailbox order; while one
runs, calls queue. ``self.proc`` is the server's :class:`Process`.

Return values:

* ``init(*args)`` returns the initial state, :class:`Ignore` (the process
  exits ``normal`` and the starter gets ``None``) or :class:`Stop` (start
  fails with its reason). Raising fails the start too.
* ``handle_call(request, from_, state)`` returns :class:`Reply`,
  :class:`NoReply` (reply later with ``from_.reply(...)``) or :class:`Stop`.
* ``handle_cast(request, state)``, ``handle_info(msg, state)`` and
  ``handle_continue(term, state)`` return the new state, :class:`NoReply`
  or :class:`Stop`.

An action rides on a result as ``then=`` (``Reply(v, s, then=...)``,
``NoReply(s, then=...)``; ``init`` returns ``NoReply(state, then=...)`` for
one), as OTP's fourth tuple element:

* ``Continue(term)``: ``handle_continue(term, state)`` runs next, before any
  message (OTP's ``{continue, Term}``);
* a number of seconds: if no message arrives in that time,
  ``handle_info(TIMEOUT, state)`` runs (OTP's timeout; any message cancels it);
* ``HIBERNATE``: a memory hint: the server gives back its empty mailbox's
  buffer while it waits (see ``docs/otp.md`` for what it can mean in Python).

An exception in a callback ends the server with that exception as the exit
reason, after ``terminate(reason, state)`` ran. ``terminate`` also runs on
:class:`Stop`, on ``stop()`` and, when the server traps exits, on an exit
signal from its parent or from the node itself (``Node.shutdown``, or
``Node.exit`` with no sender). A server that does not trap exits is killed by
exit signals without ``terminate`` (as in OTP). If ``terminate`` raises or
exits, that becomes the exit reason (a :class:`Stop`'s reply is sent anyway).
Every exit with a reason other than normal / shutdown is logged on the
``actors`` logger with the last message and the state (``Node(log_crashes=)``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar

from ._child_spec import ChildSpec
from ._errors import (
    CallError,
    CallTimeout,
    NoProcess,
    ProcessExit,
    ReceiveTimeout,
    ServerDied,
    StartError,
    check_timeout,
)
from ._messages import CallMsg, CastMsg, From, SysMsg
from ._process import Process
from ._returns import _NO_REPLY, TIMEOUT, Continue, Hibernate, Ignore, NoReply, Reply, Stop
from ._types import NORMAL, Exit, Pid, Ref

if TYPE_CHECKING:
    from ._node import Node

log = logging.getLogger("actors.gen_server")


class GenServer:
    """Base class of gen_server-like processes. See the module docstring."""

    kind: ClassVar[str] = "gen_server"
    proc: Process
    """The server's process, set before ``init`` runs."""
    state: Any = None
    """The current state (read-only for introspection; the loop owns it)."""
    crash_state_copy: ClassVar[Any] = None
    """Opt-in: a one-argument callable (``copy.deepcopy``, say). When set, the
    loop keeps ``crash_state_copy(state)`` before every handler, so that a crash
    report shows the state exactly as it was even if the handler mutated it in
    place. Default None: the report holds a reference (no per-message cost)."""

    @property
    def last_message(self) -> Any:
        """The message being (or last) handled: a reference, kept for crash reports."""
        return self.proc.last_message

    async def init(self, *args: Any) -> Any:
        """Return the initial state (default: the first argument, or None)."""
        return args[0] if args else None

    async def handle_call(self, request: Any, from_: From, state: Any) -> Reply | NoReply | Stop:
        """Answer a call. The default fails: an unexpected call is a bug."""
        raise NotImplementedError(f"{type(self).__name__} got unexpected call {request!r}")

    async def handle_cast(self, request: Any, state: Any) -> Any:
        """Handle a cast. The default fails: an unexpected cast is a bug."""
        raise NotImplementedError(f"{type(self).__name__} got unexpected cast {request!r}")

    async def handle_info(self, msg: Any, state: Any) -> Any:
        """Handle any other message. The default logs and keeps the state."""
        log.warning("%s %s got unexpected message %r", type(self).__name__, self.proc.pid, msg)
        return state

    async def handle_continue(self, term: Any, state: Any) -> Any:
        """Go on with work a callback asked for with ``then=Continue(term)``,
        before the next message. The default fails: an unexpected continue is a bug."""
        raise NotImplementedError(f"{type(self).__name__} got unexpected continue {term!r}")

    async def terminate(self, reason: Any, state: Any) -> None:
        """Clean up before exiting. Runs in the server's process; if it raises
        or exits, that becomes the exit reason (logged, naming the server)."""

    @classmethod
    def child_spec(
        cls,
        *args: Any,
        id: Any = None,
        name: str | None = None,
        restart: str = "permanent",
        shutdown: float | str = 5.0,
        label: str | None = None,
    ) -> ChildSpec:
        """A supervisor child spec that starts this server with ``init(*args)``."""

        async def start_fn(parent: Process, *extra: Any) -> Pid | None:
            return await start_link(parent, cls, *args, *extra, name=name, label=label)

        return ChildSpec(
            id=id if id is not None else (name or cls.__name__),
            start=start_fn,
            restart=restart,
            shutdown=shutdown,
            type="supervisor" if cls.kind == "supervisor" else "worker",
            label=label or cls.__name__,
        )


ServerFactory = type[GenServer] | GenServer


async def start(
    node: Node,
    server: ServerFactory,
    *args: Any,
    name: str | None = None,
    label: str | None = None,
    timeout: float | None = 5.0,
) -> Pid | None:
    """Start a server outside any supervision tree and wait for its ``init``.

    ``server`` is a :class:`GenServer` subclass (instantiated with no
    arguments) or an instance. Returns its pid, or None if ``init`` returned
    :class:`Ignore`. Raises :class:`StartError` if ``init`` failed or took
    longer than ``timeout`` seconds, :class:`NameTaken` (with the holder's
    ``pid``: OTP's ``already_started``) if ``name`` is taken.
    """
    check_timeout(timeout)
    pid, _ = await _start(node, None, None, server, args, name, label, timeout)
    return pid


async def start_link(
    parent: Process,
    server: ServerFactory,
    *args: Any,
    name: str | None = None,
    label: str | None = None,
    timeout: float | None = 5.0,
) -> Pid | None:
    """Start a server linked to ``parent`` (a process: a supervisor, say) and
    wait for its ``init``. A failed ``init`` unlinks before exiting, so the
    failure reaches the parent as a :class:`StartError`, not as an exit signal."""
    check_timeout(timeout)
    pid, _ = await _start(parent.node, parent, None, server, args, name, label, timeout)
    return pid


async def start_monitor(
    caller: Process,
    server: ServerFactory,
    *args: Any,
    name: str | None = None,
    label: str | None = None,
    timeout: float | None = 5.0,
) -> tuple[Pid, Ref] | None:
    """Start a server monitored by ``caller`` (not linked) and wait for its
    ``init``; returns ``(pid, ref)``, the ref of the monitor (OTP's
    ``start_monitor``). The monitor is set before ``init`` runs, so when the
    start fails (:class:`StartError`) or ``init`` returns :class:`Ignore`
    (None), a :class:`Down` for it still arrives in ``caller``'s mailbox, as
    in OTP."""
    check_timeout(timeout)
    pid, ref = await _start(caller.node, None, caller, server, args, name, label, timeout)
    if pid is None or ref is None:
        return None
    return pid, ref


async def _start(
    node: Node,
    parent: Process | None,
    watcher: Process | None,
    server: ServerFactory,
    args: tuple[Any, ...],
    name: str | None,
    label: str | None,
    timeout: float | None,
) -> tuple[Pid | None, Ref | None]:
    instance = server() if isinstance(server, type) else server
    ack: asyncio.Future[Pid | None] = node.loop.create_future()
    # whoever stops waiting (timeout, cancellation), the outcome is read here,
    # so asyncio never logs "Future exception was never retrieved"
    ack.add_done_callback(_retrieve)
    lbl = label or type(instance).__name__
    if parent is None:
        pid = node._spawn(_loop, (instance, args, ack), name, lbl, watcher, False)
    else:
        pid = node._spawn(_loop, (instance, args, ack), name, lbl, parent, True)
    del args
    mon = watcher.monitor(pid) if watcher is not None else None
    # Watch the server while it starts: if it dies before acknowledging (killed
    # before its body ever ran, say), the starter gets a StartError instead of
    # waiting forever (proc_lib:start_link does the same with a monitor).
    proc = node._get(pid)
    ref = node.make_ref()

    def on_down(_pid: Pid, reason: Any) -> None:
        if not ack.done():
            ack.set_exception(StartError(reason))

    if proc is not None:
        if proc._monitors is None:
            proc._monitors = {}
        proc._monitors[ref] = on_down
    # One timer (in a shared empty context: its callback reads no context variable)
    # rather than wait_for around a shield, which made a dozen more objects per
    # start (a coroutine, two more futures, closures, a partial, a copy of the
    # context): the supervisor's cost of every restart. The starter's cancellation
    # may cancel ack: the server and on_down only ever set it when it is not done.
    handle = None
    if timeout is not None:
        if timeout > 0:
            handle = node.loop.call_later(timeout, _start_timeout, ack, context=_NO_CONTEXT)
        else:
            _start_timeout(ack)  # as wait_for's: no time at all to start in
    try:
        return await ack, mon
    except _StartTimeout:
        if parent is not None:
            parent.unlink(pid)
            parent.drop(lambda m: type(m) is Exit and m.pid == pid)
        if not ack.done():
            ack.cancel()
        node.exit(pid, "kill")
        raise StartError("timeout") from None
    finally:
        if handle is not None:
            handle.cancel()
        if proc is not None:
            _forget_monitor(proc, ref)


class _StartTimeout(Exception):
    """The start's ack, failed by its timer (never seen outside :func:`_start`)."""


def _start_timeout(ack: asyncio.Future[Any]) -> None:
    if not ack.done():
        ack.set_exception(_StartTimeout())


_NO_CONTEXT = contextvars.Context()
"""The context the start timer's callback runs in (it reads no context variable)."""


def _forget_monitor(proc: Process, ref: Ref) -> None:
    """Remove the starter's (or a sys request's) watch; an empty table goes back to None,
    so that a server does not keep an empty dict for the collector to walk all its life."""
    mons = proc._monitors
    if mons is not None:
        mons.pop(ref, None)
        if not mons:
            proc._monitors = None


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _loop(proc: Process, server: GenServer, args: tuple[Any, ...], ack: asyncio.Future[Pid | None]) -> None:
    server.proc = proc
    proc.behaviour = server
    try:
        res = await server.init(*args)
    except BaseException as exc:
        _init_failed(proc, ack, exc)
        raise
    # keep no reference to the start arguments (OTP keeps none): the frame
    # would hold them for as long as the server runs
    del args
    then: Any = None
    if type(res) is NoReply:
        state, then = res.state, res.then
    elif isinstance(res, Ignore):
        _init_failed(proc, ack, None)
        return
    elif isinstance(res, Stop):
        _init_failed(proc, ack, res.reason)
        proc.exit(res.reason)
    else:
        state = res
    del res
    if not ack.done():
        ack.set_result(proc.pid)
    del ack
    server.state = state
    reason: Any = NORMAL
    # The exit signals that make a trapping server terminate: its parent's, and
    # the node's own (Node.shutdown, Node.exit without a sender): the node is
    # every process's ultimate parent. (The frame lives as long as the server,
    # and every object it holds is one more for the cyclic GC to walk at each
    # collection: the node's own pid is shared, and ``proc.receive`` is looked up
    # per message rather than kept as a bound method.)
    parent = proc.parent
    node_pid = proc.node._node_pid
    stop_reply: tuple[From, Any] | None = None
    copy_state = server.crash_state_copy
    msg: Any = None
    pending: Any = None
    while True:
        if then is None:
            pending = None
            msg = await proc.receive()
        else:
            pending = then  # what a system message restarts (see get_state below)
            msg, then = await _next(proc, then)
        if copy_state is not None:
            server._crash_state_before = copy_state(state)  # type: ignore[attr-defined]
        t = type(msg)
        try:
            if t is CallMsg:
                r: Any = await server.handle_call(msg.request, msg.reply_to, state)
                tr = type(r)
                if tr is Reply:
                    msg.reply_to.reply(r.value)
                    state, then = r.state, r.then
                elif tr is NoReply:
                    state, then = r.state, r.then
                elif tr is Stop:
                    if r.reply is not _NO_REPLY:
                        stop_reply = (msg.reply_to, r.reply)  # sent after terminate, as OTP
                    state, reason = r.state, r.reason
                    break
                else:
                    raise TypeError(f"handle_call must return Reply, NoReply or Stop, not {tr.__name__}")
                if then is not None:
                    then = _check_then(then)
            elif t is SysMsg:
                if msg.kind == "get_state":
                    msg.reply_to.reply(state)
                    if type(pending) is not Continue:
                        then = pending  # as OTP: a pending timeout / hibernate starts over
                elif msg.kind == "stop":
                    msg.reply_to.reply(None)
                    reason = msg.arg
                    break
            elif t is Exit and proc.trap_exit and (msg.pid == parent or msg.pid == node_pid):
                reason = msg.reason
                break
            else:
                if t is CastMsg:
                    r = await server.handle_cast(msg.request, state)
                elif t is Continue:
                    r = await server.handle_continue(msg.term, state)
                else:
                    r = await server.handle_info(msg, state)
                tr = type(r)
                if tr is Stop:
                    state, reason = r.state, r.reason
                    break
                if tr is NoReply:
                    state, then = r.state, r.then
                else:
                    state = r
            if then is not None:
                then = _check_then(then)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and not proc.alive:
                raise
            # terminate runs with the reason; if it raises or exits, that is
            # the exit reason (as OTP), chained to this one
            await server.terminate(exc.reason if isinstance(exc, ProcessExit) else exc, state)
            raise
        server.state = state
    server.state = state
    try:
        await server.terminate(reason, state)
    finally:
        # {stop, Reason, Reply, State}: the caller gets its reply once terminate
        # ran, even if terminate raised or exited (OTP replies in an `after`)
        if stop_reply is not None and proc.alive:
            stop_reply[0].reply(stop_reply[1])
    proc.exit(reason)


async def _next(proc: Process, then: Any) -> tuple[Any, Any]:
    """The next message under a callback's action: (message, action left)."""
    if type(then) is Continue:
        proc.last_message = then
        return then, None
    if type(then) is Hibernate:
        mb = proc._mb
        if mb is not None and not mb:
            proc._mb = None  # the empty mailbox's buffer is the memory to give back
        return await proc.receive(), None
    try:
        return await proc.receive(timeout=then), None
    except ReceiveTimeout:
        proc.last_message = TIMEOUT
        return TIMEOUT, None


def _check_then(then: Any) -> Any:
    """Validate a callback's action: None, a timeout in seconds, Continue or Hibernate."""
    if then is None or type(then) is Continue or type(then) is Hibernate:
        return then
    timeout = check_timeout(then)
    return None if timeout == math.inf else timeout


def _init_failed(proc: Process, ack: asyncio.Future[Pid | None], reason: Any) -> None:
    if proc.parent is not None:
        proc.unlink(proc.parent)
    if proc.name is not None:
        # free the name before the starter hears of the failure, so that it
        # can start again at once (OTP unregisters before the nack)
        proc.node.unregister(proc.name)
    if not ack.done():
        if reason is None:
            ack.set_result(None)
        else:
            ack.set_exception(StartError(reason))


# -- client side --------------------------------------------------------------------


async def _sys(node: Node, dest: Pid | str, kind: str, arg: Any, timeout: float | None) -> Any:
    check_timeout(timeout)  # before anything is sent: a bad timeout leaves the server alone
    p = node._get(dest)
    if p is None:
        raise NoProcess(dest)
    loop = node.loop
    if p._task is not None and p._task is asyncio.current_task(loop):
        raise CallError(dest, "calling_self")  # it would wait on itself (OTP: calling_self)
    fut: asyncio.Future[Any] = loop.create_future()
    ref = node.make_ref()
    done: asyncio.Future[Any] = loop.create_future()

    def on_down(pid: Pid, reason: Any) -> None:
        if not done.done():
            done.set_result(reason)
        if not fut.done():
            fut.set_exception(ServerDied(dest, reason))

    if p._monitors is None:
        p._monitors = {}
    p._monitors[ref] = on_down
    fut.add_done_callback(_retrieve)
    p._deliver(SysMsg(kind, From(fut, ref, p), arg))
    try:
        if kind == "stop":
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return None
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise CallTimeout(dest, kind, timeout or 0.0) from None
    finally:
        _forget_monitor(p, ref)


async def get_state(node: Node, dest: Pid | str, *, timeout: float | None = 5.0) -> Any:
    """The server's current state, answered between two messages (like
    ``sys:get_state``). Raises :class:`CallTimeout` if the server is busy
    longer than ``timeout``, :class:`NoProcess` if it is not alive."""
    return await _sys(node, dest, "get_state", None, timeout)


async def stop(node: Node, dest: Pid | str, reason: Any = NORMAL, *, timeout: float | None = 5.0) -> None:
    """Stop a server with ``reason`` after its ``terminate``; returns once it
    has exited. Raises :class:`CallTimeout` or :class:`NoProcess`; a
    ``timeout`` that is not None or a number >= 0 raises ``TypeError`` /
    ``ValueError`` before the stop request is sent, and the server lives on."""
    await _sys(node, dest, "stop", reason, timeout)


def reply(from_: From, value: Any) -> None:
    """Send a deferred reply (same as ``from_.reply(value)``)."""
    from_.reply(value)

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
* ``handle_cast(request, state)`` and ``handle_info(msg, state)`` return the
  new state, or :class:`Stop`.

An exception in a callback ends the server with that exception as the exit
reason, after ``terminate(reason, state)`` ran. ``terminate`` also runs on
:class:`Stop`, on ``stop()`` and, when the server traps exits, on an exit
signal from its parent or from the node itself (``Node.shutdown``, or
``Node.exit`` with no sender). A server that does not trap exits is killed by
exit signals without ``terminate`` (as in OTP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ._errors import CallTimeout, NoProcess, ProcessExit, ServerDied, StartError
from ._events import CallReplied
from ._messages import CallMsg, CastMsg, From, SysMsg
from ._process import Process
from ._types import NORMAL, Exit, Pid

if TYPE_CHECKING:
    from ._node import Node
    from ._supervisor import ChildSpec

log = logging.getLogger("actors.gen_server")
_NO_REPLY: Any = object()


@dataclass(frozen=True, slots=True)
class Reply:
    """``handle_call`` result: reply ``value`` and go on with ``state``."""

    value: Any
    """The reply."""
    state: Any
    """The new state."""


@dataclass(frozen=True, slots=True)
class NoReply:
    """``handle_call`` result: no reply now (a deferred reply follows); go on with ``state``."""

    state: Any
    """The new state."""


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

    async def terminate(self, reason: Any, state: Any) -> None:
        """Clean up before exiting. Exceptions here are logged, never raised."""

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
        from ._supervisor import ChildSpec

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
    longer than ``timeout`` seconds.
    """
    return await _start(node, None, server, args, name, label, timeout)


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
    return await _start(parent.node, parent, server, args, name, label, timeout)


async def _start(
    node: Node,
    parent: Process | None,
    server: ServerFactory,
    args: tuple[Any, ...],
    name: str | None,
    label: str | None,
    timeout: float | None,
) -> Pid | None:
    instance = server() if isinstance(server, type) else server
    ack: asyncio.Future[Pid | None] = node.loop.create_future()
    lbl = label or type(instance).__name__
    if parent is None:
        pid = node._spawn(_loop, (instance, args, ack), name, lbl, None, link=False)
    else:
        pid = node._spawn(_loop, (instance, args, ack), name, lbl, parent, link=True)
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
    try:
        return await asyncio.wait_for(asyncio.shield(ack), timeout)
    except TimeoutError:
        if parent is not None:
            parent.unlink(pid)
            parent.drop(lambda m: type(m) is Exit and m.pid == pid)
        node.exit(pid, "kill")
        raise StartError("timeout") from None
    finally:
        if proc is not None and proc._monitors is not None:
            proc._monitors.pop(ref, None)


async def _loop(proc: Process, server: GenServer, args: tuple[Any, ...], ack: asyncio.Future[Pid | None]) -> None:
    server.proc = proc
    proc.behaviour = server
    try:
        res = await server.init(*args)
    except BaseException as exc:
        _init_failed(proc, ack, exc)
        raise
    if isinstance(res, Ignore):
        _init_failed(proc, ack, None)
        return
    if isinstance(res, Stop):
        _init_failed(proc, ack, res.reason)
        proc.exit(res.reason)
    if not ack.done():
        ack.set_result(proc.pid)
    state = res
    server.state = state
    receive = proc.receive
    reason: Any = NORMAL
    # The exit signals that make a trapping server terminate: its parent's, and
    # the node's own (Node.shutdown, Node.exit without a sender): the node is
    # every process's ultimate parent.
    parent = proc.parent
    node_pid = Pid(proc.node.node_id, 0)
    stop_reply: tuple[From, Any] | None = None
    copy_state = server.crash_state_copy
    while True:
        msg = await receive()
        if copy_state is not None:
            server._crash_state_before = copy_state(state)  # type: ignore[attr-defined]
        t = type(msg)
        try:
            if t is CallMsg:
                r = await server.handle_call(msg.request, msg.reply_to, state)
                if isinstance(r, Reply):
                    msg.reply_to.reply(r.value)
                    if proc.traced:
                        proc.node._emit(CallReplied(proc.pid, msg.reply_to, r.value, time.time()))
                    state = r.state
                elif isinstance(r, NoReply):
                    state = r.state
                elif isinstance(r, Stop):
                    if r.reply is not _NO_REPLY:
                        stop_reply = (msg.reply_to, r.reply)  # sent after terminate, as OTP
                    state, reason = r.state, r.reason
                    break
                else:
                    raise TypeError(f"handle_call must return Reply, NoReply or Stop, not {type(r).__name__}")
            elif t is CastMsg:
                r = await server.handle_cast(msg.request, state)
                if type(r) is Stop:
                    state, reason = r.state, r.reason
                    break
                state = r.state if type(r) is NoReply else r
            elif t is SysMsg:
                if msg.kind == "get_state":
                    msg.reply_to.reply(state)
                elif msg.kind == "stop":
                    msg.reply_to.reply(None)
                    reason = msg.arg
                    break
            elif t is Exit and proc.trap_exit and (msg.pid == parent or msg.pid == node_pid):
                reason = msg.reason
                break
            else:
                r = await server.handle_info(msg, state)
                if type(r) is Stop:
                    state, reason = r.state, r.reason
                    break
                state = r.state if type(r) is NoReply else r
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and not proc.alive:
                raise
            await _safe_terminate(server, exc.reason if isinstance(exc, ProcessExit) else exc, state)
            raise
        server.state = state
    server.state = state
    await _safe_terminate(server, reason, state)
    if stop_reply is not None:
        stop_reply[0].reply(stop_reply[1])
    proc.exit(reason)


def _init_failed(proc: Process, ack: asyncio.Future[Pid | None], reason: Any) -> None:
    if proc.parent is not None:
        proc.unlink(proc.parent)
    if not ack.done():
        if reason is None:
            ack.set_result(None)
        else:
            ack.set_exception(StartError(reason))


async def _safe_terminate(server: GenServer, reason: Any, state: Any) -> None:
    try:
        await server.terminate(reason, state)
    except Exception:
        log.exception("%s.terminate raised", type(server).__name__)


# -- client side --------------------------------------------------------------------


async def _sys(node: Node, dest: Pid | str, kind: str, arg: Any, timeout: float | None) -> Any:
    p = node._get(dest)
    if p is None:
        raise NoProcess(dest)
    loop = node.loop
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
    p._deliver(SysMsg(kind, From(fut, ref), arg))
    try:
        if kind == "stop":
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return None
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        raise CallTimeout(dest, kind, timeout or 0.0) from None
    finally:
        if p._monitors is not None:
            p._monitors.pop(ref, None)


async def get_state(node: Node, dest: Pid | str, *, timeout: float | None = 5.0) -> Any:
    """The server's current state, answered between two messages (like
    ``sys:get_state``). Raises :class:`CallTimeout` if the server is busy
    longer than ``timeout``, :class:`NoProcess` if it is not alive."""
    return await _sys(node, dest, "get_state", None, timeout)


async def stop(node: Node, dest: Pid | str, reason: Any = NORMAL, *, timeout: float | None = 5.0) -> None:
    """Stop a server with ``reason`` after its ``terminate``; returns once it
    has exited. Raises :class:`CallTimeout` or :class:`NoProcess`."""
    await _sys(node, dest, "stop", reason, timeout)


def reply(from_: From, value: Any) -> None:
    """Send a deferred reply (same as ``from_.reply(value)``)."""
    from_.reply(value)

"""Attachments: keep a :class:`NodeModel` (and the history) in sync with an agent.

One background thread runs one asyncio loop shared by every attachment
(:class:`AttachManager`). Each :class:`Attachment` connects with
:class:`agent.client.AgentClient`, feeds every pushed message (snapshot
parts, events, samples, gaps) into its model and store, and when the
connection drops marks the node down (the last-known picture is kept) and
re-attaches with jittered exponential backoff; the agent starts every session
(and every resync after a ``gap``) with a fresh snapshot, which replaces the
picture.

Threading rules
    * :meth:`Attachment.command`, :meth:`Attachment.run_audited`,
      :meth:`Attachment.kill_preview`, :meth:`Attachment.stop` and every
      :class:`AttachManager` method may be called from any thread *except*
      the manager's loop thread (they block on it); coroutines running on the
      loop use :meth:`Attachment.acommand`.
    * Change listeners (:meth:`Attachment.on_change`,
      :meth:`AttachManager.on_change`) are called on the loop thread, with a
      batch of changes at most every ``change_interval`` seconds; they must
      be quick (hand over to Socket.IO, say) and must not call the blocking
      methods above.
    * The model and the store are thread-safe on their own: read them from
      anywhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent import protocol as P
from agent.client import AgentClient, AgentError

from .model import Change, NodeModel
from .store import HistoryStore

__all__ = ["E_NOT_CONNECTED", "AttachManager", "Attachment", "parse_address"]

log = logging.getLogger("observer.attach")
T = TypeVar("T")

E_NOT_CONNECTED = "not_connected"
"""``AgentError.code`` when a command is sent while the node is not attached."""

ChangeListener = Callable[[list[Change]], None]
NamedChangeListener = Callable[[str, list[Change]], None]

_CLOSED = {"t": "_closed"}


BUSY_RETRY = 0.05
"""Seconds before retrying an agent that answered ``busy`` (grows by half per retry)."""
BUSY_RETRY_MAX = 1.0
"""At most this long between retries of a ``busy`` agent."""

FREEZE_AT = 5000
"""Processes in a fresh snapshot past which the collector forgets the heap (see ``_feed``)."""


def parse_address(address: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> ``(host, port)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, not {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def compress_changes(changes: list[Change]) -> list[Change]:
    """Drop what a later ``reset`` supersedes and keep one ``samples`` per batch."""
    last_reset = max((i for i, c in enumerate(changes) if c.kind == "reset"), default=-1)
    if last_reset > 0:
        changes = [c for c in changes[:last_reset] if c.kind in ("status", "gap", "error")] + changes[last_reset:]
    out: list[Change] = []
    rows = 0
    seen_samples = False
    for c in changes:
        if c.kind == "samples":
            rows += int((c.data or {}).get("rows") or 0)
            seen_samples = True
            continue
        out.append(c)
    if seen_samples:
        out.append(Change("samples", None, {"rows": rows}))
    return out


class Attachment:
    """One node, attached (or trying to be). Created by :meth:`AttachManager.add`."""

    def __init__(
        self,
        address: str,
        token: str | bytes,
        role: str,
        model: NodeModel,
        store: HistoryStore | None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        name: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        change_interval: float = 0.25,
        connect_timeout: float = 5.0,
    ) -> None:
        if role not in P.ROLES:
            raise ValueError(f"role must be one of {P.ROLES}")
        self.address = address
        self.host, self.port = parse_address(address)
        self.name = name or address
        self.role = role
        self.model = model
        self.store = store
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.change_interval = change_interval
        self.connect_timeout = connect_timeout
        self.client: AgentClient | None = None
        self.last_error: str | None = None
        self.attempts = 0
        self.connects = 0
        self.connected_since: float | None = None
        self._token = token
        self._loop = loop
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._listeners: list[ChangeListener] = []
        self._pending: list[Change] = []
        self._flush_handle: asyncio.TimerHandle | None = None
        self.bad_frames = 0
        """Frames the agent pushed that did not read (see :func:`agent.protocol.read_push`): dropped."""
        self.frame_tap: Callable[[str, list[dict[str, Any]]], None] | None = None
        """Sees every batch of the agent's messages (loop thread; must not block):
        the trace service takes its ``trace`` frames (observer/trace.py)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start attaching on ``loop`` (a running loop in another thread)."""
        if loop is not None:
            self._loop = loop
        if self._loop is None:
            raise RuntimeError("no loop: use AttachManager.add")
        _call(self._loop, self._astart())

    async def _astart(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"attach {self.name}")

    def stop(self, timeout: float = 10.0) -> None:
        """Detach (from any thread but the loop's). Idempotent."""
        if self._loop is None or self._loop.is_closed():
            return
        _call(self._loop, self._astop(), timeout)

    async def _astop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._flush()

    @property
    def status(self) -> str:
        """``connecting``, ``syncing``, ``up`` or ``down`` (the model's)."""
        return self.model.status

    def info(self) -> dict[str, Any]:
        """A JSON-able description (no token)."""
        c = self.client
        return {
            "name": self.name,
            "address": self.address,
            "direction": "attach",
            "role": self.role,
            "tls": self.ssl_context is not None,
            "status": self.model.status,
            "last_error": self.last_error,
            "attempts": self.attempts,
            "connects": self.connects,
            "connected_since": self.connected_since,
            "commands": list(c.welcome.get("commands") or []) if c is not None else [],
            "session": c.welcome.get("session") if c is not None else None,
            "bad_frames": self.bad_frames,
        }

    # -- the connection loop (loop thread) -----------------------------------------------------------

    async def _run(self) -> None:
        delay = self.backoff_initial
        busy = 0
        while not self._stopping:
            self.attempts += 1
            try:
                client = await self._connect()
            except asyncio.CancelledError:
                raise
            except AgentError as exc:
                if exc.code != P.E_BUSY:
                    delay = await self._failed(exc, delay)
                    continue
                # the agent's handshake pool is full (a flood?) and it asks for a retry, which
                # costs it little: retrying soon keeps our place; a growing backoff left the
                # pool to the flood for seconds
                busy += 1
                err = _describe(exc)
                if err != self.last_error:
                    log.info("observer: %s (%s) is busy, retrying: %s", self.name, self.address, err)
                self.last_error = err
                await self._backoff(min(BUSY_RETRY * 1.5**busy, BUSY_RETRY_MAX))
                continue
            except (TimeoutError, OSError, P.FrameError, asyncio.IncompleteReadError) as exc:
                delay = await self._failed(exc, delay)
                continue
            busy = 0
            self.connects += 1
            started = time.monotonic()
            self.connected_since = time.time()
            self.client = client
            self.last_error = None
            log.info("observer: attached %s (%s) as %s", self.name, self.address, self.role)
            self._record(
                {
                    "t": "status",
                    "status": "up",
                    "node": client.hello.get("node"),
                    "session": client.welcome.get("session"),
                }
            )
            self._changed(self.model.connected(client.hello, client.welcome))
            try:
                await self._pump(client)
            finally:
                self.client = None
                self.connected_since = None
                with contextlib.suppress(Exception):
                    await client.close()
            reason = client.close_reason or "connection closed"
            self.last_error = reason
            log.warning("observer: lost %s (%s): %s", self.name, self.address, reason)
            self._record({"t": "status", "status": "down", "reason": reason})
            self._changed(self.model.disconnected(reason))
            if time.monotonic() - started >= self.stable_after:
                delay = self.backoff_initial
            await self._backoff(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _failed(self, exc: BaseException, delay: float) -> float:
        """An attempt failed: log and audit it (once per distinct error); a node that was
        up (a model restored as up, say) is marked down, in the model and in the history
        alike; wait ``delay``; returns the next delay."""
        err = _describe(exc)
        if err != self.last_error:
            log.warning("observer: cannot attach %s (%s): %s", self.name, self.address, err)
            if _is_refusal(exc):
                await self._audit_refusal(err)
        self.last_error = err
        if self.model.status not in ("down", "connecting"):  # it was up (or restored as up)
            self._record({"t": "status", "status": "down", "reason": err})
            self._changed(self.model.disconnected(err))
        await self._backoff(delay)
        return min(delay * 2, self.backoff_max)

    async def _connect(self) -> AgentClient:
        """One attempt at an authenticated session (overridden for agents that dial in)."""
        return await AgentClient.connect(
            self.host,
            self.port,
            token=self._token,
            role=self.role,
            ssl_context=self.ssl_context,
            server_hostname=self.server_hostname,
            timeout=self.connect_timeout,
        )

    async def _audit_refusal(self, err: str) -> None:
        """An authentication or certificate failure goes to the audit log (once per distinct error)."""
        store = self.store
        if store is None:
            return
        try:
            aid = await asyncio.to_thread(store.audit, "observer", self.address, "attach", None, {}, node=self.name)
            store.audit_result(aid, {"error": "refused", "message": err}, ok=False)
        except Exception as exc:
            log.error("observer: could not audit the refused attach of %s: %s", self.name, exc)

    async def _backoff(self, delay: float) -> None:
        """Sleep ``delay`` with jitter (50-100 %), or until stopped."""
        wake = self._wake
        if wake is None or self._stopping:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), delay * random.uniform(0.5, 1.0))

    async def _pump(self, client: AgentClient) -> None:
        async def sentinel() -> None:
            await client.closed.wait()
            client.messages.put_nowait(_CLOSED)  # after every message the reader queued

        watcher = asyncio.get_running_loop().create_task(sentinel())
        try:
            while True:
                batch = [await client.messages.get()]
                while len(batch) < 2000:
                    try:
                        batch.append(client.messages.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                closed = False
                if batch[-1] is _CLOSED:
                    batch.pop()
                    closed = True
                await self._feed(batch)
                if closed:
                    return
                await asyncio.sleep(0)  # let the other attachments run
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    def _checked(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The frames of ``batch`` that read as the protocol declares them
        (:func:`agent.protocol.read_push`); the others are dropped and counted
        (an agent newer than this observer, say, or a broken one)."""
        out = []
        for m in batch:
            try:
                P.read_push(m)
            except P.FrameError as exc:
                self.bad_frames += 1
                if self.bad_frames <= 10 or self.bad_frames % 1000 == 0:
                    log.warning(
                        "observer: %s sent a frame that does not read (%d so far): %s", self.name, self.bad_frames, exc
                    )
                continue
            out.append(m)
        return out

    async def _feed(self, raw: list[dict[str, Any]]) -> None:
        batch = self._checked(raw)
        tap = self.frame_tap
        if tap is not None:
            try:
                tap(self.name, batch)
            except Exception:
                log.exception("observer: frame tap failed on %s", self.name)
        store = self.store
        if store is not None:
            for m in batch:
                store.record(self.name, m)
        start = 0
        for i, m in enumerate(batch):
            if m["t"] == "snapshot_end":
                if i > start:
                    self._changed(self.model.apply_many(batch[start:i]))
                # building a big graph takes a while: off the loop (the model is thread-safe)
                self._changed(await asyncio.to_thread(self.model.apply, m))
                if self.model.graph.number_of_nodes() >= FREEZE_AT:
                    # the graph just built is long-lived: collect once, then put
                    # everything out of the collector's sight, so that later full
                    # collections (which walked all of it: pauses of 100 ms and
                    # more in the middle of a crash's way to the screen) only see
                    # what is new
                    gc.collect()
                    gc.freeze()
                start = i + 1
        if start < len(batch):
            self._changed(self.model.apply_many(batch[start:]))

    def _record(self, msg: dict[str, Any]) -> None:
        if self.store is not None:
            self.store.record(self.name, msg)

    # -- change batching (loop thread) ----------------------------------------------------------------

    def on_change(self, callback: ChangeListener) -> Callable[[], None]:
        """Call ``callback(changes)`` on the loop thread with batches of changes
        (at most one call per ``change_interval``). Returns an unsubscribe function."""
        self._listeners.append(callback)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return off

    def _changed(self, changes: list[Change]) -> None:
        if not changes:
            return
        self._pending.extend(changes)
        if self._flush_handle is None and self._loop is not None and not self._loop.is_closed():
            self._flush_handle = self._loop.call_later(self.change_interval, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        batch = compress_changes(self._pending)
        self._pending = []
        for cb in list(self._listeners):
            try:
                cb(batch)
            except Exception:
                log.exception("observer: change listener %r failed", cb)

    # -- commands ---------------------------------------------------------------------------------------

    async def acommand(self, cmd: str, *, timeout: float = 10.0, **args: Any) -> Any:
        """Run a command on the loop thread; raises :class:`AgentError`
        (code :data:`E_NOT_CONNECTED` when detached)."""
        client = self.client
        if client is None or client.closed.is_set():
            raise AgentError(E_NOT_CONNECTED, f"{self.name} is not attached ({self.last_error or self.status})")
        return await client.command(cmd, timeout=timeout, **args)

    def command(self, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
        """Run a command from any thread (but the loop's); returns its result or
        raises :class:`AgentError` (``timeout`` if no reply in time)."""
        if self._loop is None:
            raise AgentError(E_NOT_CONNECTED, "not started")
        try:
            return _call(self._loop, self._command_timed(cmd, timeout, args), timeout + 5.0)
        except concurrent.futures.TimeoutError:
            raise AgentError(P.E_TIMEOUT, f"no reply to {cmd} within {timeout}s") from None

    async def _command_timed(self, cmd: str, timeout: float, args: dict[str, Any]) -> Any:
        try:
            return await self.acommand(cmd, timeout=timeout, **args)
        except TimeoutError:
            raise AgentError(P.E_TIMEOUT, f"no reply to {cmd} within {timeout}s") from None

    def run_audited(
        self,
        cmd: str,
        *,
        who: str | None,
        from_addr: str | None,
        timeout: float = 10.0,
        **args: Any,
    ) -> Any:
        """:meth:`command`, with an audit row written *before* it runs (operator
        commands) and its outcome recorded after. Raises
        :class:`observer.store.AuditError` (and does nothing) if the audit row
        cannot be written, :class:`AgentError` if the command fails."""
        audit_id: int | None = None
        if self.store is not None and cmd in P.OPERATOR_COMMANDS:
            target = args.get("pid") or args.get("to") or args.get("supervisor")
            audit_id = self.store.audit(who, from_addr, cmd, str(target) if target else None, args, node=self.name)
        try:
            result = self.command(cmd, timeout=timeout, **args)
        except AgentError as exc:
            if audit_id is not None and self.store is not None:
                self.store.audit_result(audit_id, {"error": exc.code, "message": exc.message}, ok=False)
            raise
        if audit_id is not None and self.store is not None:
            self.store.audit_result(audit_id, result, ok=True)
        return result

    def kill_preview(
        self, pid: str, reason: str = "kill", *, refresh: bool = True, timeout: float = 3.0
    ) -> dict[str, Any]:
        """:meth:`NodeModel.kill_preview`, after refreshing (best effort) what the
        stream does not carry: the budgets and child order of the supervisors
        above ``pid`` and the trap_exit flags of its links (``inspect``/``info``)."""
        notes: list[str] = []
        if refresh and self.client is not None:
            detail = self.model.process(pid)
            if detail is not None:
                sups = [p for p in detail["path"] if p != pid][-8:]
                if detail.get("kind") == "supervisor":
                    sups.append(pid)
                # trap_exit changes at run time (a body sets it when it starts) and
                # the stream reports it only with the next sample: ask for all links
                unknown = list(detail["links"])[:50]
                unknown.append(pid)
                for p in sups:
                    try:
                        self.model.merge_info(p, self.command("inspect", timeout=timeout, pid=p, mailbox_limit=0))
                    except AgentError as exc:
                        notes.append(f"could not refresh {p}: {exc.code}")
                for p in unknown:
                    try:
                        self.model.merge_info(p, self.command("info", timeout=timeout, pid=p))
                    except AgentError as exc:
                        notes.append(f"could not refresh {p}: {exc.code}")
                # links that arrived while we asked: their flags too, once
                again = self.model.process(pid)
                for p in list(again["links"] if again else ())[:50]:
                    if p not in unknown:
                        try:
                            self.model.merge_info(p, self.command("info", timeout=timeout, pid=p))
                        except AgentError as exc:
                            notes.append(f"could not refresh {p}: {exc.code}")
        out = self.model.kill_preview(pid, reason)
        out.setdefault("warnings", []).extend(notes)
        return out


class AttachManager:
    """All attachments of one observer, on one background loop thread.

    ``store`` (optional) receives every attachment's messages. See the module
    docstring for the threading rules."""

    def __init__(self, store: HistoryStore | None = None, **defaults: Any) -> None:
        self.store = store
        self._defaults = defaults
        self._lock = threading.Lock()
        self._attachments: dict[str, Attachment] = {}
        self._listeners: list[NamedChangeListener] = []
        self.frame_tap: Callable[[str, list[dict[str, Any]]], None] | None = None
        """Given to every attachment (see :attr:`Attachment.frame_tap`)."""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="observer-attach", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self._closed = False

    def _main(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in pending:
                    t.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=5))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop every attachment runs on."""
        return self._loop

    def add(
        self,
        address: str,
        token: str | bytes,
        role: str = P.ROLE_READ,
        *,
        name: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        model: NodeModel | None = None,
        cls: type[Attachment] | None = None,
        **options: Any,
    ) -> Attachment:
        """Attach to the agent at ``address`` (``host:port``) and return at once;
        the attachment connects (and reconnects) in the background. ``name``
        (default: the address) must be unique. ``cls``: an :class:`Attachment`
        subclass (:class:`observer.dialin.DialInAttachment` for agents that dial in)."""
        key = name or address
        with self._lock:
            if self._closed:
                raise RuntimeError("the attach manager is closed")
            if key in self._attachments:
                raise ValueError(f"already attached: {key!r}")
            opts = {**self._defaults, **options}
            att = (cls or Attachment)(
                address,
                token,
                role,
                model if model is not None else NodeModel(key),
                self.store,
                ssl_context=ssl_context,
                name=key,
                loop=self._loop,
                **opts,
            )
            for cb in self._listeners:
                att.on_change(_bind(cb, key))
            att.frame_tap = self.frame_tap
            self._attachments[key] = att
        att.start()
        return att

    def adopt(self, att: Any) -> None:
        """Hold an already built stand-in for an attachment under ``att.name``
        (e.g. a post-mortem dump's frozen node: a model, no agent, no changes).
        Raises ``ValueError`` if the name is taken."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the attach manager is closed")
            if att.name in self._attachments:
                raise ValueError(f"already attached: {att.name!r}")
            self._attachments[att.name] = att

    def remove(self, name: str, timeout: float = 10.0) -> bool:
        """Detach and forget ``name``; False if there was no such attachment."""
        with self._lock:
            att = self._attachments.pop(name, None)
        if att is None:
            return False
        att.stop(timeout)
        return True

    def get(self, name: str) -> Attachment | None:
        with self._lock:
            return self._attachments.get(name)

    def list(self) -> list[Attachment]:
        with self._lock:
            return list(self._attachments.values())

    def on_change(self, callback: NamedChangeListener) -> None:
        """Call ``callback(name, changes)`` (on the loop thread) for every
        attachment, present and future."""
        with self._lock:
            self._listeners.append(callback)
            atts = list(self._attachments.items())
        for key, att in atts:
            att.on_change(_bind(callback, key))

    def close(self, timeout: float = 10.0) -> None:
        """Detach everything and stop the loop thread. Idempotent. Does not close the store."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            atts = list(self._attachments.values())
            self._attachments.clear()
        for att in atts:
            with contextlib.suppress(Exception):
                att.stop(timeout)
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> AttachManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bind(cb: NamedChangeListener, name: str) -> ChangeListener:
    return lambda changes: cb(name, changes)


def _call(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float | None = 10.0) -> T:
    """Run ``coro`` on ``loop`` (another thread's) and wait for its result."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        coro.close()
        raise RuntimeError("this blocking call cannot be made from the attach loop thread; await the a* variant")
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


def _is_refusal(exc: BaseException) -> bool:
    """A refusal (wrong token, bad certificate), as opposed to a node that is not there."""
    if isinstance(exc, ssl.SSLError):
        return True
    return isinstance(exc, AgentError) and exc.code in (P.E_AUTH_FAILED, P.E_BAD_HANDSHAKE)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AgentError):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, asyncio.TimeoutError):
        return "connect timed out"
    return f"{type(exc).__name__}: {exc}"

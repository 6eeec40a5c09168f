"""One attachment: connect to an agent, keep its node's model (and the history) in
step with what it pushes, mark the node down when the link drops and attach again
(see :mod:`observer.attach` for the whole picture and the threading rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

from agent import protocol as P
from agent.client import AgentClient, AgentError

from ..model import Change, NodeModel
from ..model.snapshot import freeze_long_lived
from ..store import HistoryStore
from ._commands import Commands
from ._common import (
    BUSY_RETRY,
    BUSY_RETRY_MAX,
    ChangeListener,
    call_on,
    compress_changes,
    describe,
    is_refusal,
    log,
    parse_address,
)
from ._gate import SyncGate, SyncSlot

__all__ = ["Attachment"]

_CLOSED = {"t": "_closed"}


class Attachment(Commands):
    """One node, attached (or trying to be). Created by :meth:`AttachManager.add`."""

    gated = True
    """Whether :meth:`_connect` waits for a place in the sync gate (an agent that
    dials in is not waited for: its connection is already there)."""

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
        self.sync_gate: SyncGate | None = None
        """Given by the manager: connect only with a place in it, held until the
        first snapshot is in (see observer/attach/_gate.py)."""
        self._slot: SyncSlot | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start attaching on ``loop`` (a running loop in another thread)."""
        if loop is not None:
            self._loop = loop
        if self._loop is None:
            raise RuntimeError("no loop: use AttachManager.add")
        # the loop may be busy folding the snapshots of the nodes attached just before
        # (twenty of 50,000 processes): waiting 10 s for it failed the server's boot
        call_on(self._loop, self._astart(), 60.0)

    async def _astart(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"attach {self.name}")

    def stop(self, timeout: float = 10.0) -> None:
        """Detach (from any thread but the loop's). Idempotent."""
        if self._loop is None or self._loop.is_closed():
            return
        call_on(self._loop, self._astop(), timeout)

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
                client = await self._connect_gated()
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
                err = describe(exc)
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
                self._leave_gate()
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
        err = describe(exc)
        if err != self.last_error:
            log.warning("observer: cannot attach %s (%s): %s", self.name, self.address, err)
            if is_refusal(exc):
                await self._audit_refusal(err)
        self.last_error = err
        if self.model.status not in ("down", "connecting"):  # it was up (or restored as up)
            self._record({"t": "status", "status": "down", "reason": err})
            self._changed(self.model.disconnected(err))
        await self._backoff(delay)
        return min(delay * 2, self.backoff_max)

    async def _connect_gated(self) -> AgentClient:
        """:meth:`_connect` with a place in the sync gate, if there is one (given
        back at once if the attempt fails)."""
        gate = self.sync_gate
        if gate is not None and self.gated:
            self._slot = await gate.enter()
        try:
            return await self._connect()
        except BaseException:
            self._leave_gate()
            raise

    def _leave_gate(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

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
                # a turn folds at most one snapshot chunk (500 records, a few ms): twenty nodes
                # sending 50,000-record snapshots at once must not hold the loop for seconds,
                # or the other agents' handshakes (2 s deadline) time out
                while len(batch) < 2000 and batch[-1] is not _CLOSED and batch[-1].get("t") != "snapshot_chunk":
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
                self._leave_gate()  # the snapshot is in: the next node may connect
                # the graph just built is long-lived: out of the collector's sight
                freeze_long_lived(self.model.graph.number_of_nodes())
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

"""The attach manager: every attachment of one observer, on one background loop thread.

Threading rules: every :class:`AttachManager` method may be called from any
thread *except* the manager's loop thread (they block on it); change listeners
run on the loop thread (see :mod:`observer.attach`).

The GIL: the loop thread does many short steps, each after a system call that
lets the GIL go (a read from one of a thousand sockets, a wake-up), and each
waits to take it back while another thread holds it: up to the interpreter's
switch interval (5 ms by default) whenever one is busy with Python code (the
history writer folding a 50,000-process snapshot and encoding its checkpoint,
a page's query). The steps between an agent's frame and the browser's batch
(reads, the change flush, the hub's wake-up, one send per browser) add up. So
the manager lowers the process's switch interval to :data:`SWITCH_INTERVAL`
(never raises it): busy threads hand the GIL over sooner, at the cost of a few
more switches between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import threading
from collections.abc import Callable
from typing import Any

from agent import protocol as P

from ..model import NodeModel
from ..store import HistoryStore
from ._attachment import Attachment
from ._common import ChangeListener, NamedChangeListener
from ._gate import SyncGate

__all__ = ["MAX_SYNCING", "SWITCH_INTERVAL", "AttachManager"]

SWITCH_INTERVAL = 0.001
"""The longest (seconds) a thread keeps the GIL when another asks for it, once a manager runs
(:func:`sys.setswitchinterval`; see the module docstring)."""


MAX_SYNCING = 4
"""How many attachments may be between their connect and the end of their first
snapshot at once (observer/attach/_gate.py)."""


class AttachManager:
    """All attachments of one observer, on one background loop thread.

    ``store`` (optional) receives every attachment's messages. See the module
    docstring for the threading rules."""

    def __init__(self, store: HistoryStore | None = None, *, max_syncing: int = MAX_SYNCING, **defaults: Any) -> None:
        self.store = store
        self.sync_gate = SyncGate(max_syncing)
        """Given to every attachment: how many may be receiving their first snapshot at once."""
        self._defaults = defaults
        self._lock = threading.Lock()
        self._attachments: dict[str, Attachment] = {}
        self._listeners: list[NamedChangeListener] = []
        self.frame_tap: Callable[[str, list[dict[str, Any]]], None] | None = None
        """Given to every attachment (see :attr:`Attachment.frame_tap`)."""
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
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
            att.sync_gate = self.sync_gate
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

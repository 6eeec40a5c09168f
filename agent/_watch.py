"""Observers coming and going (agent thread, and the host's loop for the
hooks): while at least one is attached the agent hands batches off, runs its
watchdog and, for a source whose hooks wait for an observer
(:attr:`agent._source.Source.hooks_on_demand`: an actors node), keeps those
hooks installed; with nobody attached it does none of it. A mixin of
:class:`agent._agent.Agent` (docs/protocol.md §11.1).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._collector import Collector
    from ._session import Session
    from ._source import Source

log = logging.getLogger("agent")


class Watch:
    """Needs the agent's sessions, source, collector, loop and watchdog (the
    last base of the agent: the stubs below give way to the real methods)."""

    source: Source
    sessions: list[Session]
    collector: Collector
    heartbeat: float
    _loop: asyncio.AbstractEventLoop | None
    _watchdog: asyncio.TimerHandle | None
    _stopping: bool
    _watching: bool
    _hooks_always: bool
    _hooked: bool
    _hooks_lock: threading.Lock
    _hooks_event: asyncio.Event | None

    @property
    def watch_limit(self) -> float:
        raise NotImplementedError

    def _arm_watchdog(self, delay: float) -> None:
        raise NotImplementedError

    def sessions_changed(self) -> None:
        """Agent thread, as a session becomes ready or closes. While somebody
        is attached: hand-offs (see ``_collector``), the watchdog, and the
        source's hooks (:attr:`Source.hooks_on_demand`). With nobody attached
        the agent's thread sleeps with no timer and, on an actors node, the
        node runs with no instrument: it builds no event and no crash report
        (docs/protocol.md §11.1)."""
        watching = any(s.ready for s in self.sessions)
        self.collector.handoff_enabled = watching
        if watching == self._watching:
            return
        self._watching = watching
        if watching:
            self._arm_watchdog(self.watch_limit)
        if self.source.hooks_on_demand and not self._hooks_always:
            if not watching and self._hooks_event is not None:
                self._hooks_event.clear()
            try:
                self.source.loop.call_soon_threadsafe(self._apply_hooks)
            except RuntimeError:  # the host's loop is closed
                self._apply_hooks()

    def _watching_hooks(self, on: bool) -> None:
        with self._hooks_lock:
            if on == self._hooked:
                return
            try:
                if on:
                    self.source.hook()
                else:
                    self.source.unhook()
            except Exception:  # never into the host
                log.exception("agent: could not %s the source's hooks", "install" if on else "remove")
                return
            self._hooked = on

    def _apply_hooks(self) -> None:
        """Host loop (or the agent's thread, see :meth:`hooks_ready`): install
        the source's hooks while somebody is attached, remove them once nobody is."""
        on = (self._watching or self._hooks_always) and not self._stopping
        self._watching_hooks(on)
        loop, event = self._loop, self._hooks_event
        if on and self._hooked and loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the agent's loop closed: it is stopping
                pass

    async def hooks_ready(self) -> None:
        """Agent loop, before a snapshot: wait until the hooks are installed,
        so that every event after the snapshot reaches the session. If the
        host's loop does not run the installation within a heartbeat
        (blocked, or not started), install them from this thread: the
        snapshot then goes out before the watchdog's first look (``watch_limit``
        after the attach), so that a block in progress is reported to this
        observer too (an event published while a session waits for its
        snapshot is not sent to it)."""
        if self._hooked or not self.source.hooks_on_demand or self._hooks_event is None:
            return
        try:
            await asyncio.wait_for(self._hooks_event.wait(), self.heartbeat)
        except TimeoutError:
            self._apply_hooks()

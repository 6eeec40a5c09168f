"""Limits on connections that have not authenticated yet (the agent's listener).

Anyone who can reach the agent's port can open connections; none of them may
keep a legitimate observer from attaching. So:

* a connection has ``deadline`` seconds (2 s) from accept to a complete
  ``auth`` frame, after which it is closed;
* at most ``per_peer`` connections from one address wait in the handshake, at
  most ``max_pending`` in all;
* a new connection is never refused for lack of room: the *oldest* pending
  connection of the peer that has the most of them is closed instead. A flood
  from one address only ever evicts its own connections while others wait, and
  an observer on the flooding host itself still gets in: its handshake takes
  one round trip, so it is evicted only if ``per_peer`` newer connections from
  that address arrive within that round trip (and it retries);
* timeouts and evictions are counted and logged once per ``log_every``
  seconds per peer, not once per connection (a flood must not flood the log).

Threading rules
    Used on the agent's own event loop only (the listener's callbacks); no locks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict

__all__ = ["HANDSHAKE_DEADLINE", "PreAuth"]

audit = logging.getLogger("agent.audit")

HANDSHAKE_DEADLINE = 2.0
"""Seconds from accept (or from the agent's dial) to a complete ``auth`` frame."""


class PreAuth:
    """Pending handshakes of the agent's listener (see the module docstring)."""

    def __init__(
        self,
        *,
        max_pending: int = 256,
        per_peer: int = 64,
        deadline: float = HANDSHAKE_DEADLINE,
        log_every: float = 10.0,
    ) -> None:
        self.agent_id = secrets.token_hex(8)
        """This agent's id for the handshake's MACs (random per agent start)."""
        self.max_pending = max_pending
        self.per_peer = per_peer
        self.deadline = deadline
        self.log_every = log_every
        self._by_peer: dict[str, OrderedDict[asyncio.StreamWriter, float]] = {}
        self._pending = 0
        self.evicted = 0
        self.timed_out = 0
        self.failed = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._logged: dict[tuple[str, str], float] = {}

    @property
    def pending(self) -> int:
        return self._pending

    def admit(self, host: str, writer: asyncio.StreamWriter) -> None:
        """Count a new connection from ``host``; make room by closing the oldest of the busiest peer."""
        mine = self._by_peer.setdefault(host, OrderedDict())
        if len(mine) >= self.per_peer:
            self._evict(host)
        elif self._pending >= self.max_pending:
            busiest = max(self._by_peer, key=lambda h: len(self._by_peer[h]))
            self._evict(busiest)
        mine = self._by_peer.setdefault(host, OrderedDict())
        mine[writer] = time.monotonic()
        self._pending += 1

    def done(self, host: str, writer: asyncio.StreamWriter) -> None:
        """The connection authenticated, failed or closed: it no longer waits."""
        mine = self._by_peer.get(host)
        if mine is not None and mine.pop(writer, None) is not None:
            self._pending -= 1
            if not mine:
                del self._by_peer[host]

    def _evict(self, host: str) -> None:
        mine = self._by_peer.get(host)
        if not mine:
            return
        writer, _ = mine.popitem(last=False)
        self._pending -= 1
        if not mine:
            del self._by_peer[host]
        self.evicted += 1
        self.note(host, "evicted (too many pending handshakes)")
        transport = writer.transport
        if transport is not None:
            transport.abort()

    def note(self, host: str, what: str) -> None:
        """Count a refusal; log it at most once per ``log_every`` seconds per (peer, kind)."""
        key = (host, what)
        self._counts[key] = self._counts.get(key, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(key, -1e9) >= self.log_every:
            n = self._counts.pop(key)
            self._logged[key] = now
            audit.warning("agent: handshake from %s %s (%d since the last report)", host, what, n)
            if len(self._logged) > 4096:  # memory bound: forget the oldest reports
                for k in list(self._logged)[:2048]:
                    self._logged.pop(k, None)
                    self._counts.pop(k, None)

"""Limits on connections that have not authenticated yet (the agent's listener).

Anyone who can reach the agent's port can open connections; none of them may
keep a legitimate observer from attaching. So:

* a connection has ``deadline`` seconds (2 s) from accept to a complete
  ``auth`` frame, after which it is closed;
* at most ``max_pending`` connections wait in the handshake (1,024, or a
  quarter of the host's open-files limit if less), at most ``per_peer`` of them
  from one address (all, by default: fairness comes from the eviction below);
* when there is no room, the *oldest silent* pending connection of that peer
  (or, when every slot is taken, of the peer with the most) is closed to make
  room, if it has waited more than ``grace`` (250 ms); if not, the newcomer is
  answered ``busy`` and closed, which an observer retries soon (within
  250 ms; see ``observer.attach``). A flood from one address only ever evicts
  its own connections, and an observer on the flooding host itself gets in: a
  connection, once admitted, keeps its slot for ``grace``, far more than a real
  observer's round trip, and slots keep freeing up as the flood's connections
  age (each admission costs the flood a slot for at least ``grace``);
* a connection whose answer to ``hello`` has arrived (a whole frame in its
  reader, or bytes in the kernel the loop has not read yet; not yet read by
  its session: on a loaded host the agent's loop may take a while to get to
  them) is never evicted (part of a frame does not count): it is about to authenticate or
  fail, and then it leaves the pool anyway. So an observer admitted and quick
  to answer keeps its slot however slow the agent's loop is under the flood;
  a flood that answers with complete frames is refused at the first one;
* timeouts and evictions are counted and logged once per ``log_every``
  seconds per peer, not once per connection (a flood must not flood the log).

Threading rules
    Used on the agent's own event loop only (the listener's callbacks); no locks.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import select
import time
from collections import OrderedDict
from typing import Any

from . import protocol as P

resource: Any
try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None

__all__ = ["HANDSHAKE_DEADLINE", "PreAuth"]

audit = logging.getLogger("agent.audit")

HANDSHAKE_DEADLINE = 2.0
"""Seconds from accept (or from the agent's dial) to a complete ``auth`` frame."""


class PreAuth:
    """Pending handshakes of the agent's listener (see the module docstring)."""

    def __init__(
        self,
        *,
        max_pending: int | None = None,
        per_peer: int | None = None,
        deadline: float = HANDSHAKE_DEADLINE,
        grace: float = 0.25,
        log_every: float = 10.0,
    ) -> None:
        self.agent_id = secrets.token_hex(8)
        """This agent's id for the handshake's MACs (random per agent start)."""
        self.max_pending = max_pending if max_pending is not None else default_max_pending()
        self.per_peer = per_peer if per_peer is not None else self.max_pending
        self.deadline = deadline
        self.grace = grace
        """A pending connection younger than this is never evicted (a real observer
        answers ``hello`` within one round trip): the newcomer is refused instead."""
        self.log_every = log_every
        self._by_peer: dict[str, OrderedDict[asyncio.StreamWriter, tuple[float, asyncio.StreamReader | None]]] = {}
        self._pending = 0
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self.failed = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._logged: dict[tuple[str, str], float] = {}

    @property
    def pending(self) -> int:
        return self._pending

    def admit(self, host: str, writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None = None) -> bool:
        """Count a new connection from ``host`` (``reader``: its stream, to see whether it
        has answered yet). When there is no room, the oldest silent pending connection
        of ``host`` (or, with every slot taken, of the busiest peer) is closed if it has
        waited more than ``grace`` seconds; otherwise the newcomer is: False, it was
        answered ``busy`` and closed."""
        mine = self._by_peer.get(host)
        victim_peer: str | None = None
        if mine is not None and len(mine) >= self.per_peer:
            victim_peer = host
        elif self._pending >= self.max_pending:
            victim_peer = max(self._by_peer, key=lambda h: len(self._by_peer[h]))
        if victim_peer is not None and not self._evict(victim_peer):
            self.refused += 1
            self.note(host, "refused (too many young pending handshakes)")
            _busy(writer)
            return False
        self._by_peer.setdefault(host, OrderedDict())[writer] = (time.monotonic(), reader)
        self._pending += 1
        return True

    def done(self, host: str, writer: asyncio.StreamWriter) -> None:
        """The connection authenticated, failed or closed: it no longer waits."""
        mine = self._by_peer.get(host)
        if mine is not None and mine.pop(writer, None) is not None:
            self._pending -= 1
            if not mine:
                del self._by_peer[host]

    def _evict(self, host: str) -> bool:
        """Close ``host``'s oldest silent pending connection if it is past its grace."""
        mine = self._by_peer.get(host)
        if not mine:
            return False
        now = time.monotonic()
        victim: asyncio.StreamWriter | None = None
        for writer, (since, reader) in mine.items():  # oldest first
            if now - since < self.grace:
                return False  # the rest are younger still
            if not _answered(writer, reader):
                victim = writer
                break
        if victim is None:
            return False
        del mine[victim]
        self._pending -= 1
        if not mine:
            del self._by_peer[host]
        self.evicted += 1
        self.note(host, "evicted (too many pending handshakes)")
        _busy(victim)
        return True

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


def default_max_pending() -> int:
    """1,024 pending handshakes, or a quarter of the host's open-files limit if
    that is less (the host's own sockets and files come first)."""
    if resource is None:
        return 256
    try:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 1024
    return max(16, min(1024, soft // 4))


def _answered(writer: asyncio.StreamWriter, reader: asyncio.StreamReader | None) -> bool:
    """A whole frame has arrived on this connection that its session has not read yet
    (in ``reader``'s buffer), or bytes the loop has not even read yet (in the kernel's:
    they are in the reader's buffer at the loop's next turn, judged then). A part of a
    frame does not count: a flood sending a byte now and then is evicted as if silent.
    ``StreamReader`` has no public call for its buffer: it is looked at if it has one."""
    buffer = getattr(reader, "_buffer", None)
    if isinstance(buffer, (bytes, bytearray)) and len(buffer) >= P.HEADER.size:
        (n,) = P.HEADER.unpack_from(buffer)
        if len(buffer) >= P.HEADER.size + n:
            return True
    sock = writer.get_extra_info("socket")
    try:
        fd = sock.fileno() if sock is not None else -1
        if fd < 0:
            return False
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _busy(writer: asyncio.StreamWriter) -> None:
    """Tell the peer to come back later (an observer retries ``busy``), then close."""
    try:
        writer.write(P.encode_frame({"t": "error", "code": P.E_BUSY, "message": "too many pending handshakes; retry"}))
        writer.close()
    except Exception:
        transport = writer.transport
        if transport is not None:
            transport.abort()

"""The sync gate: how many attachments may be between their connect and the
end of their first snapshot at once (loop thread only).

Why: an observer started with twenty nodes of 50,000 processes attached them
all at once, and their snapshots (~15 MB of JSON each) kept its loop and the
history writer busy for a minute. The handshakes of the nodes still
connecting were answered late, past the agent's 2 s deadline for a
handshake: two to six timed out in every such attach, each retried after a
backoff. A few at a time,
each node's handshake is answered promptly and its snapshot comes in while
the others wait their turn (not yet connected: they cost nothing).

A slot is given back when the first snapshot is in, when the attempt fails
or the link drops, or after ``hold_max`` seconds whatever happens (an agent
that sends no snapshot must not hold the others back).
"""

from __future__ import annotations

import asyncio

__all__ = ["SyncGate", "SyncSlot"]


class SyncGate:
    """At most ``limit`` attachments syncing at once (see the module docstring)."""

    def __init__(self, limit: int, hold_max: float = 30.0) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.hold_max = hold_max
        self.holding = 0
        self.peak = 0
        """The most slots held at once (tests, stats)."""
        self.waited = 0
        """Entries that had to wait for a slot."""
        self._sem: asyncio.Semaphore | None = None

    async def enter(self) -> SyncSlot:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        if self._sem.locked():
            self.waited += 1
        await self._sem.acquire()
        self.holding += 1
        self.peak = max(self.peak, self.holding)
        return SyncSlot(self)

    def _give_back(self) -> None:
        self.holding -= 1
        assert self._sem is not None
        self._sem.release()


class SyncSlot:
    """One attachment's place in the gate; :meth:`release` is idempotent."""

    def __init__(self, gate: SyncGate) -> None:
        self._gate: SyncGate | None = gate
        self._timer = asyncio.get_running_loop().call_later(gate.hold_max, self.release)

    def release(self) -> None:
        gate, self._gate = self._gate, None
        if gate is None:
            return
        self._timer.cancel()
        gate._give_back()

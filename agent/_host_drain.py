"""The per-batch work on the host's own loop (issue 19): encode the batch and
write it to the observers' sockets from the host's hand-off callback itself,
instead of waking the agent's thread and waiting for it.

Why: a hand-off costs the host the agent's work *and* the waiting around it
(the agent's thread has to wake, take the GIL, run a loop step, give the GIL
back; measured about twice the work). Done on the host's thread the batch
costs exactly its CPU.

How it stays safe: the agent's thread holds :attr:`Agent.work_lock` whenever
it runs, and lets go of it only while its loop waits in ``select`` (the
:class:`LockedSelector`). The host takes the lock without blocking: when it
gets it, the agent's thread is parked in ``select`` and touches nothing until
the host is done (the sessions' queues, the encoder's caches, ``seq``); when
it does not, the agent is busy and the host falls back to the hand-off. Writes
go to the session's transport, which sends at once on a non-blocking socket
or, if the socket is full, registers its writer with the agent loop's
selector (``epoll`` accepts that from another thread, and the agent's loop
then writes the rest). Anything else the agent's loop must do (a writer task
to wake for a resync, the rest of a long batch) is handed over with
``call_soon_threadsafe``, which wakes its ``select``. TLS sessions are left to
the agent's thread (the TLS layer schedules work on its loop)."""

from __future__ import annotations

import asyncio
import logging
import selectors
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import protocol as P
    from ._agent import Agent
    from ._session import Session

log = logging.getLogger("agent")


class LockedSelector(selectors.DefaultSelector):
    """The agent loop's selector: ``lock`` is let go while waiting in ``select``
    and taken back before the loop runs anything."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__()
        self.lock = lock
        self.wakes = 0
        """How many times the agent's loop came out of a ``select`` that could wait
        (not its ready-callbacks' polls): its thread's wake-ups (tests: per command)."""

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        self.lock.release()
        try:
            return super().select(timeout)
        finally:
            self.lock.acquire()
            if timeout is None or timeout > 0:
                self.wakes += 1


def host_drain(agent: Agent, batch: int) -> bool:
    """Host loop: drain and write ``batch`` on this thread if the agent's thread
    is parked; False (nothing done) if it is busy or stopping. Never raises."""
    lock = agent.work_lock
    if not lock.acquire(blocking=False):
        return False
    loop = agent._loop
    c = agent.collector
    wake = False
    try:
        if loop is None or loop.is_closed() or agent._stopping or not agent._ready.is_set() or agent.tracer.traces:
            return False  # (a trace session's timers live on the agent's loop: its drains stay there)
        agent._last_drain = time.monotonic()  # as the agent's own drain notes it (fresh spawns' clock)
        c.wake_pending = False
        agent.holding = True
        try:
            agent._drain_some()
        finally:
            agent.holding = False
        wake = _write(agent)
        dropped = c.dropped
        if dropped:
            c.dropped -= dropped
            agent.events_dropped += dropped
            for s in agent.sessions:
                s.dropped += dropped
                s.request_resync()
            wake = True
        c.host_drains += 1
        c.flushed_here(batch)
    except Exception:  # never into the host
        log.exception("agent: host-side drain failed")
        wake = True
    finally:
        lock.release()
    if c.buf:  # more than one drain's worth: the rest on the next loop step
        c.wake_pending = True
        c.batches += 1
        c.host_loop.call_soon(c.handoff, c.batches)  # type: ignore[union-attr]
    if wake:
        _wake_writers(agent, loop)
    return True


def _write(agent: Agent) -> bool:
    """Write what the sessions queued (host thread, lock held); True if the
    agent's loop has something left to do (a TLS session, a writer woken)."""
    wake = False
    for s in agent.sessions:
        if not s.ready:
            continue
        if s.writer.get_extra_info("sslcontext") is not None:
            wake = True  # TLS: written by the agent's thread
            continue
        try:
            s.flush_now(agent.write_high_water)
        except Exception:
            log.exception("agent session %s: write failed", s.id)
        if s.writer_woken():
            wake = True
    return wake


def host_tick(agent: Agent) -> bool:
    """Host loop, each heartbeat: the agent's periodic work (sampling when
    due, the collector drained, fresh spawns re-checked) on this thread if the agent's thread is parked; False
    (nothing done: the tick's hand-off follows) if it is busy, stopping, a
    trace runs, or a blocked loop is to be reported as over. Never raises."""
    lock = agent.work_lock
    if not lock.acquire(blocking=False):
        return False
    loop = agent._loop
    wake = False
    try:
        if (
            loop is None
            or loop.is_closed()
            or agent._stopping
            or not agent._ready.is_set()
            or agent.tracer.traces
            or agent._blocked_since is not None
        ):
            return False
        now = time.monotonic()
        c = agent.collector
        agent.holding = True
        try:
            agent._sample_due(now)
            if c.buf:
                agent._last_drain = now
                c.wake_pending = False
                agent._drain_some()
                c.flushed_here(c.batches)
            elif any(s.ready for s in agent.sessions):
                agent.source.recheck()
        finally:
            agent.holding = False
        wake = _write(agent)
        c.host_ticks += 1
    except Exception:  # never into the host
        log.exception("agent: host-side tick failed")
        wake = True
    finally:
        lock.release()
    if wake:
        _wake_writers(agent, loop)
    return True


def host_reply(agent: Agent, session: Session, reply: P.ReplyMsg, timer: asyncio.TimerHandle) -> bool:
    """Host loop: write a command's ``reply`` to its session from this thread
    if the agent's thread is parked and nothing must go first (no reply queued,
    no resync or snapshot under way, the socket under its high-water mark, no
    TLS); ``timer`` (the command's timeout, on the agent's loop) is then
    cancelled and the session's ``inflight`` slot given back. False (nothing
    done: hand the reply to the agent's loop) otherwise. May raise only if the
    encoding does (the caller then hands it over)."""
    lock = agent.work_lock
    if not lock.acquire(blocking=False):
        return False
    loop = agent._loop
    wake = False
    try:
        w = session.writer
        if (
            loop is None
            or loop.is_closed()
            or agent._stopping
            or not session.ready
            or session.replies
            or session.resync
            or session._snapshotting
            or w.is_closing()
            or w.get_extra_info("sslcontext") is not None
            or w.transport.get_write_buffer_size() >= agent.write_high_water
        ):
            return False
        session._write_nowait(reply)
        timer.cancel()  # (the agent's loop is parked: its timers are this thread's to touch)
        session.inflight -= 1
        wake = w.is_closing()  # the write failed: the agent's loop is to see the connection lost
    finally:
        lock.release()
    if wake:
        _wake_writers(agent, loop)
    return True


def _wake_writers(agent: Agent, loop: asyncio.AbstractEventLoop | None) -> None:
    """Have the agent's loop flush its sessions (a write from this thread left
    work for it, or failed and the loop is to see the connection lost)."""
    if loop is not None:
        try:
            loop.call_soon_threadsafe(agent._flush_sessions)
        except RuntimeError:  # the agent's loop closed meanwhile
            pass

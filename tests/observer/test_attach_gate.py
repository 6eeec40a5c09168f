"""The sync gate (observer/attach/_gate.py): nodes attached together connect a
few at a time, each holding its place until its first snapshot is in; a
failed attempt, a dropped link or an agent that never sends its snapshot gives
the place back. Real nodes, real agents on loopback, the real observer."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import agent
from observer.attach import AttachManager
from observer.attach._gate import SyncGate
from observer.store import HistoryStore
from tests.observer import TOKEN, wait_for
from tests.observer.test_attach import Host, idle


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    hs = [Host() for _ in range(3)]
    for h in hs:
        for _ in range(200):
            h.spawn(idle)
    yield hs
    for h in hs:
        h.stop()


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Callable[[int], AttachManager]]:
    """A manager with a sync gate of the given size (closed with its store at the end)."""
    made: list[tuple[AttachManager, HistoryStore]] = []

    def make(limit: int) -> AttachManager:
        store = HistoryStore(str(tmp_path / f"history-{len(made)}.db"))
        m = AttachManager(store, max_syncing=limit, backoff_initial=0.05, backoff_max=0.3, change_interval=0.05)
        made.append((m, store))
        return m

    yield make
    for m, store in made:
        m.close()
        store.close()


def test_nodes_attached_together_sync_one_at_a_time_with_a_gate_of_one(
    gated: Callable[[int], AttachManager], hosts: list[Host]
) -> None:
    m = gated(1)
    atts = [m.add(h.address, TOKEN, "operator", name=f"n{i}") for i, h in enumerate(hosts)]
    wait_for(lambda: all(a.status == "up" for a in atts), timeout=30, what="every node up")
    for a, h in zip(atts, hosts, strict=True):
        wait_for(lambda a=a, h=h: a.model.pids() == h.live(), what=f"{a.name} mirrored")
    gate = m.sync_gate
    assert gate.peak == 1 and gate.waited >= 1 and gate.holding == 0
    assert all(a.connects == 1 for a in atts)


def test_a_node_that_cannot_be_reached_does_not_hold_the_others_back(
    gated: Callable[[int], AttachManager], hosts: list[Host]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nobody listens there once closed
    m = gated(1)
    gone = m.add(f"127.0.0.1:{dead}", TOKEN, "operator", name="gone")
    atts = [m.add(h.address, TOKEN, "operator", name=f"n{i}") for i, h in enumerate(hosts)]
    wait_for(lambda: all(a.status == "up" for a in atts), timeout=30, what="every live node up")
    wait_for(lambda: gone.attempts >= 3, what="the dead node retried")
    assert gone.status == "connecting" and "ConnectionRefusedError" in (gone.last_error or "")
    assert m.sync_gate.peak == 1


def test_a_dropped_link_gives_its_place_back(gated: Callable[[int], AttachManager], hosts: list[Host]) -> None:
    """A node seen up whose agent goes away keeps trying, each attempt taking the
    place and giving it back: the nodes attached meanwhile come up, and so does
    it once a new agent listens on its port."""
    m = gated(1)
    first = m.add(hosts[0].address, TOKEN, "operator", name="n0")
    wait_for(lambda: first.status == "up", what="n0 up")
    port = hosts[0].agent.port
    hosts[0].agent.stop()
    wait_for(lambda: first.status == "down", what="n0 down")
    others = [m.add(h.address, TOKEN, "operator", name=f"n{i}") for i, h in enumerate(hosts[1:], 1)]
    wait_for(lambda: all(a.status == "up" for a in others), timeout=30, what="the others up")
    assert m.sync_gate.holding == 0
    hosts[0].agent = agent.start(hosts[0].node, f"127.0.0.1:{port}", token=TOKEN, sample_hz=20)
    wait_for(lambda: first.status == "up", timeout=30, what="n0 up again")


async def test_a_place_held_past_its_limit_is_given_back() -> None:
    """An agent that never sends its snapshot holds its place ``hold_max`` at most."""
    gate = SyncGate(1, hold_max=0.2)
    loop = asyncio.get_running_loop()
    first = await gate.enter()  # never released by its holder
    t0 = loop.time()
    second = await asyncio.wait_for(gate.enter(), 5)
    waited = loop.time() - t0
    second.release()
    second.release()  # (idempotent)
    first.release()  # (already given back by its timer: nothing happens)
    assert 0.15 <= waited < 4 and gate.holding == 0 and gate.peak == 1


def test_the_gate_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError):
        SyncGate(0)

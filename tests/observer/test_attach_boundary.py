"""The attach link reads frames through the protocol's boundary checks: a frame
that does not read (an event kind this observer does not know, a frame missing
a field) is dropped and counted, and the ones around it still apply."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from observer.attach import AttachManager
from observer.store import HistoryStore
from tests.observer import TOKEN, wait_for
from tests.observer.test_attach import Host, idle, threads_checked

__all__ = ["threads_checked"]


@pytest.fixture
def host(threads_checked: None) -> Iterator[Host]:
    h = Host()
    yield h
    h.stop()


def test_a_frame_that_does_not_read_is_dropped_and_counted(host: Host, tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.db"))
    manager = AttachManager(store, backoff_initial=0.05, backoff_max=0.3, change_interval=0.05)
    try:
        att = manager.add(host.address, TOKEN, "operator")
        wait_for(lambda: att.status == "up", what="attached")
        # the real agent publishes (on its own thread) what a newer or broken agent
        # might: an event kind we do not know, an update without its fields; then a spawn
        loop = host.agent._loop
        assert loop is not None
        loop.call_soon_threadsafe(host.agent._publish, {"ev": "teleport", "pid": "<0.1.0>", "time": time.time()})
        loop.call_soon_threadsafe(host.agent._publish, {"ev": "update", "time": time.time()})
        pid = host.spawn(idle)
        wait_for(lambda: att.model.process(pid) is not None, what="the spawn after the bad frames")
        assert att.bad_frames == 2
        assert att.info()["bad_frames"] == 2
        assert att.status == "up"
    finally:
        manager.close()
        store.close()

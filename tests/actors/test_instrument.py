"""The instrument hook: typed events, and a raising instrument cannot hurt the node."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import actors as A
from tests.conftest import wait_until


async def _idle(proc: A.Process) -> None:
    await proc.receive()


class Recorder(A.Instrument):
    def __init__(self) -> None:
        self.events: list[Any] = []

    def spawned(self, event: A.Spawned) -> None:
        self.events.append(event)

    def exited(self, event: A.Exited) -> None:
        self.events.append(event)

    def linked(self, event: A.Linked) -> None:
        self.events.append(event)

    def registered(self, event: A.Registered) -> None:
        self.events.append(event)

    def suspended(self, event: A.Suspended) -> None:
        self.events.append(event)

    def resumed(self, event: A.Resumed) -> None:
        self.events.append(event)

    def message_sent(self, event: A.MessageSent) -> None:
        self.events.append(event)

    def message_received(self, event: A.MessageReceived) -> None:
        self.events.append(event)


async def test_events_are_typed_and_in_order() -> None:
    rec = Recorder()
    async with A.Node() as node:
        node.add_instrument(rec)
        pid = node.spawn(_idle)
        node.register("x", pid)
        node.suspend(pid)
        node.resume(pid)
        node.exit(pid, "bye")
        kinds = [type(e) for e in rec.events]
        assert kinds == [A.Spawned, A.Registered, A.Suspended, A.Resumed, A.Exited]
        with pytest.raises(Exception):
            rec.events[0].pid = pid  # frozen


async def test_message_events_only_for_traced_processes() -> None:
    rec = Recorder()
    async with A.Node() as node:
        node.add_instrument(rec)
        got: list[Any] = []

        async def echo(proc: A.Process) -> None:
            while True:
                got.append(await proc.receive())

        quiet = node.spawn(echo)
        loud = node.spawn(echo)
        node.trace(loud)
        node.send(quiet, 1)
        node.send(loud, 2)
        await wait_until(lambda: len(got) == 2)
        received = [e for e in rec.events if isinstance(e, A.MessageReceived)]
        assert [(e.pid, e.message) for e in received] == [(loud, 2)]


async def test_a_raising_instrument_is_removed_and_logged_and_the_node_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(A.Instrument):
        calls = 0

        def spawned(self, event: A.Spawned) -> None:
            Broken.calls += 1
            raise RuntimeError("instrument bug")

    rec = Recorder()
    caplog.set_level(logging.ERROR, logger="actors")
    async with A.Node() as node:
        node.add_instrument(Broken())
        node.add_instrument(rec)
        p1 = node.spawn(_idle)
        p2 = node.spawn(_idle)
        assert node.is_alive(p1) and node.is_alive(p2)
        assert Broken.calls == 1  # removed after the first failure
        assert [e.pid for e in rec.events if isinstance(e, A.Spawned)] == [p1, p2]  # others still served
        assert any("removing it" in r.getMessage() for r in caplog.records)


async def test_no_instrument_means_no_event_objects(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []
    orig = A.Spawned.__init__

    def counting(self: Any, *args: Any, **kw: Any) -> None:
        made.append(args)
        orig(self, *args, **kw)

    monkeypatch.setattr(A.Spawned, "__init__", counting)
    async with A.Node() as node:
        for _ in range(10):
            node.spawn(_idle)
        assert made == []

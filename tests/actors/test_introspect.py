"""The public, read-only introspection API (what the agent reads the runtime through)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

import actors as A
from tests.conftest import wait_until


async def _idle(proc: A.Process) -> None:
    await proc.receive(lambda m: m == "stop")


async def _busy(proc: A.Process, started: asyncio.Event, release: asyncio.Event) -> None:
    started.set()
    await release.wait()


async def test_find_process_answers_none_for_an_unknown_or_dead_pid_and_finds_names() -> None:
    async with A.Node() as node:
        pid = node.spawn(_idle, name="idler")
        p = A.find_process(node, pid)
        assert p is not None and p.pid == pid
        assert A.find_process(node, "idler") is p
        assert A.find_process(node, "nobody") is None
        node.send(pid, "stop")
        await wait_until(lambda: not node.is_alive(pid))
        assert A.find_process(node, pid) is None


async def test_status_links_and_monitors_follow_the_process() -> None:
    async with A.Node() as node:
        a = node.spawn(_idle)
        b = node.spawn(_idle)
        pa = node.process(a)
        await wait_until(lambda: A.process_status(pa) == "waiting")
        pa.link(b)
        ref = pa.monitor(b)
        assert A.process_links(pa) == (b,)
        assert A.process_monitors(pa) == (b,)
        assert A.process_links(node.process(b)) == (a,)
        pa.demonitor(ref)
        assert A.process_monitors(pa) == ()
        node.suspend(a)
        assert A.process_status(pa) == "suspended"
        node.resume(a)
        assert A.process_status(pa) != "suspended"
        assert A.process_kind(pa) == "worker"


async def test_task_process_finds_the_process_running_a_task() -> None:
    async with A.Node() as node:
        started, release = asyncio.Event(), asyncio.Event()
        pid = node.spawn(_busy, started, release)
        await started.wait()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        owners = {A.task_process(node, t) for t in tasks} - {None}
        assert {p.pid for p in owners if p is not None} == {pid}
        assert A.task_process(node, asyncio.current_task()) is None
        assert A.task_process(node, None) is None
        release.set()


async def test_flight_recorder_info_is_a_frozen_record_or_none() -> None:
    async with A.Node() as node:
        pid = node.spawn(_idle)
        p = node.process(pid)
        assert A.flight_recorder_info(p) is None
        node.flight_recorder(pid, size=7)
        info = A.flight_recorder_info(p)
        assert info == A.FlightRecorderInfo(size=7, subtree=False)
        with pytest.raises(dataclasses.FrozenInstanceError):
            info.size = 8  # type: ignore[misc]


async def test_process_info_is_frozen_and_matches_the_single_reads() -> None:
    async with A.Node() as node:
        pid = node.spawn(_idle, name="x")
        p = node.process(pid)
        info = A.process_info(p)
        assert info.pid == pid and info.name == "x" and info.kind == A.process_kind(p)
        assert info.status == A.process_status(p)
        assert A.estimate_memory(p) > 0
        assert all(isinstance(f, A.StackFrame) for f in A.process_stack(p))
        with pytest.raises(dataclasses.FrozenInstanceError):
            info.name = "y"  # type: ignore[misc]


def test_format_exception_chain_shows_the_cause() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError as exc:
        text = A.format_exception_chain(exc)
    assert text.index("KeyError") < text.index("direct cause") < text.index("RuntimeError: outer")

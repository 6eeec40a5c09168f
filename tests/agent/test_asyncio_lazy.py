"""What the host no longer pays for, shown still right, on asyncio's loop and
on uvloop: the creation line read only when a task is drawn (from the code
object and offset kept at creation), the ends of short tasks that the agent
never read the start of (no event: counted, and never left behind as a
ghost), and snapshots larger than a chunk, whose tasks are placed chunk by
chunk (the scopes found on the way come with them). A real agent, the real
protocol on loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agent._aio_records import TaskRec
from agent._session import SNAPSHOT_CHUNK
from tests.agent.aio_host import LOOP_NAMES, LoopHost, Picture, attach, hosted

pytestmark = pytest.mark.timeout(60)

HEARTBEAT = 0.1
"""The agent's default heartbeat (``agent.start``)."""


@pytest.fixture(params=LOOP_NAMES)
def aio(request: pytest.FixtureRequest) -> Iterator[LoopHost]:
    yield from hosted(request.param)


async def forever() -> None:
    await asyncio.sleep(3600)


async def test_the_creation_line_is_exact_however_the_task_was_created(aio: LoopHost) -> None:
    lines: dict[str, int] = {}
    made: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, lines["via-asyncio"] = asyncio.create_task(forever(), name="via-asyncio"), sys._getframe().f_lineno
        _, lines["via-loop"] = loop.create_task(forever(), name="via-loop"), sys._getframe().f_lineno
        async with asyncio.TaskGroup() as tg:
            _, lines["via-group"] = tg.create_task(forever(), name="via-group"), sys._getframe().f_lineno
            made.set_result(None)

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(main, name="main")
        await asyncio.wrap_future(made)
        for name, line in lines.items():
            rec = await pic.until(lambda p, n=name: p.by_name(n), what=name)
            assert rec["created_at"] == f"{__file__}:{line} in {main.__qualname__}", name
            assert rec["origin"] == "task"
        group = pic.by_name("via-group")
        assert group is not None and pic.procs[group["supervisor"]]["kind"] == "taskgroup"
    finally:
        await client.close()


async def test_short_tasks_are_counted_and_never_left_behind(aio: LoopHost) -> None:
    """300 tasks that end within the agent's lazy delay, one of them failing:
    the failure is reported; whatever the agent happened to draw of the rest
    (under load it may draw some before they end) ends too; the counters count
    them all; a fresh observer's snapshot holds none of them. (Not thousands:
    drawn ones, two events each, could overrun the session's queue, which then
    resyncs with a snapshot instead of the events waited on here.)"""
    src = aio.agent.source

    async def short() -> None:
        await asyncio.sleep(0)

    async def fails() -> None:
        raise ValueError("short and failing")

    async def burst() -> None:
        tasks = [asyncio.create_task(short(), name=f"short-{i}") for i in range(300)]
        tasks.append(asyncio.create_task(fails(), name="short-failing"))
        await asyncio.gather(*tasks, return_exceptions=True)

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        created0, finished0 = src.created_total, src.finished_total
        aio.submit(burst()).result(30)
        crash = await pic.until(lambda p: p.exits(name="short-failing"), what="the failing task's crash")
        assert crash[0]["exception"] == "ValueError" and crash[0]["report"]
        assert src.created_total - created0 >= 301 and src.finished_total - finished0 >= 301
        drawn = {e["pid"] for e in pic.events if e["ev"] == "spawn" and (e["name"] or "").startswith("short-")}
        await pic.until(
            lambda p: not [k for k in drawn if k in p.procs], what="an exit for every short task that was drawn"
        )
        fresh = await Picture(await attach(aio)).sync()
        try:
            assert not [p for p in fresh.procs.values() if (p.get("name") or "").startswith("short-")]
        finally:
            await fresh.client.close()
        assert src.hook_errors == 0
    finally:
        await client.close()


async def _filled_with_a_group(aio: LoopHost) -> int:
    """SNAPSHOT_CHUNK + 500 idle tasks, then a task owning a TaskGroup of three
    (their records in the snapshot's second chunk); returns the fillers' count."""
    fillers = SNAPSHOT_CHUNK + 500
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def owner() -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                tg.create_task(forever(), name=f"member-{i}")
            ready.set_result(None)

    def make() -> None:
        for i in range(fillers):
            aio.loop.create_task(forever(), name=f"filler-{i}")
        aio.loop.create_task(owner(), name="owner")

    aio.call(make)
    await asyncio.wrap_future(ready)
    return fillers


def _assert_the_group_is_whole(pic: Picture, fillers: int) -> None:
    procs = list(pic.procs.values())
    assert sum(1 for p in procs if (p.get("name") or "").startswith("filler-")) == fillers
    own = pic.by_name("owner")
    groups = [p for p in procs if p["kind"] == "taskgroup"]
    assert own is not None and len(groups) == 1, (own, groups)
    assert groups[0]["supervisor"] == own["pid"]
    members = [p for p in procs if (p.get("name") or "").startswith("member-")]
    assert len(members) == 3 and all(m["supervisor"] == groups[0]["pid"] for m in members)
    orphans = [p["pid"] for p in procs if p.get("supervisor") and p["supervisor"] not in pic.procs]
    assert not orphans, f"records whose supervisor the snapshot does not hold: {orphans}"


async def test_a_snapshot_bigger_than_a_chunk_holds_the_scopes_its_placing_finds(aio: LoopHost) -> None:
    """Tasks made while nobody watched are placed only when a snapshot builds
    their chunk's records: a TaskGroup met in the second chunk comes in the
    snapshot, with its owner and its children under it."""
    fillers = await _filled_with_a_group(aio)
    t0 = time.monotonic()
    client = await attach(aio)
    try:
        _assert_the_group_is_whole(await Picture(client).sync(), fillers)
        assert time.monotonic() - t0 < 30
    finally:
        await client.close()


async def test_a_scope_made_between_a_snapshots_chunks_comes_with_its_tasks(aio: LoopHost) -> None:
    """The agent goes on reading the host's events between a snapshot's chunks
    (and the host drains them itself while the agent's thread waits to write).
    The tasks' start events, still queued when the observer attaches, are read
    just before the chunk that holds the TaskGroup's tasks is built, as a slow
    reader on a loaded machine made it happen (seen in CI): the members are
    placed then, outside the snapshot, and the group they stand in must still
    come in the snapshot (it came only as an event after it; the members' edges
    to it were lost)."""
    src = aio.agent.source
    src.lazy_delay = 30.0  # the start events wait in the queue: no hand-off reads them first,
    aio.agent.heartbeat = 30.0  # and no tick drains them (the host's ticks drain what is queued):
    await asyncio.sleep(3 * HEARTBEAT)  # the tick armed before is past, the next is 30 s away
    fillers = await _filled_with_a_group(aio)
    records = src.records
    queued: list[int] = []

    def records_after_a_drain(units: list[Any]) -> list[Any]:
        if not queued and any(type(u) is TaskRec and (t := u()) is not None and t.get_name() == "owner" for u in units):
            queued.append(len(aio.agent.collector.buf))
            aio.agent._drain_some()  # (the agent's thread, holding the work lock: as a drain between chunks)
        return records(units)

    src.records = records_after_a_drain
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        assert queued and queued[0] >= fillers, f"the start events were not queued at the drain: {queued}"
        _assert_the_group_is_whole(pic, fillers)
    finally:
        await client.close()


async def test_a_task_collected_while_pending_exits_destroyed(aio: LoopHost) -> None:
    """A pending task nobody holds (it waits on a future only it knows) is
    collected: its record, a weak reference, finds it gone, and it exits
    ``destroyed`` (asyncio itself warns "Task was destroyed but it is pending")."""

    async def stuck() -> None:
        await asyncio.get_running_loop().create_future()

    def make() -> None:
        aio.loop.create_task(stuck(), name="stuck")  # (not returned: nothing holds it)

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.call(make)
        await pic.until(lambda p: p.by_name("stuck"), what="the stuck task drawn")
        aio.call(gc.collect)
        ex = await pic.until(lambda p: p.exits(name="stuck"), what="its exit")
        assert ex[0]["state"] == "destroyed" and ex[0]["reason"] == "destroyed while pending"
        assert aio.agent.source.hook_errors == 0
    finally:
        await client.close()

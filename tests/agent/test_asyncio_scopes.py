"""Structured scopes end to end, on asyncio's loop and on uvloop: an
``asyncio.timeout()`` drawn as a grouping node (found from the loop's
timers, no hook), and a TaskGroup or gather whose member fails at once
drawn with its siblings' fate although everything ends within the agent's
lazy delay. A real agent, the real protocol on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.aio_host import LOOP_NAMES, LoopHost, Picture, attach, hosted

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=LOOP_NAMES)
def aio(request: pytest.FixtureRequest) -> Iterator[LoopHost]:
    yield from hosted(request.param)


async def forever() -> None:
    await asyncio.sleep(3600)


def _kind(pic: Picture, kind: str, sup: str | None = None) -> list[dict[str, Any]]:
    return [p for p in pic.procs.values() if p.get("kind") == kind and (sup is None or p.get("supervisor") == sup)]


async def test_a_timeout_is_a_node_under_its_task_holding_what_the_task_creates_inside_it(aio: LoopHost) -> None:
    gate: list[asyncio.Event] = []
    outcome: list[str] = []

    async def owner() -> None:
        gate.append(asyncio.Event())
        try:
            async with asyncio.timeout(30) as cm:
                asyncio.get_running_loop().create_task(forever(), name="direct")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(forever(), name="in-group")
                    await gate[0].wait()
                    cm.reschedule(asyncio.get_running_loop().time() + 0.05)  # expire now
                    await forever()
        except TimeoutError:
            outcome.append("timed out")
        await forever()

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="owner")
        await pic.until(lambda p: p.by_name("in-group") and p.by_name("direct"), what="the tasks")
        own = pic.by_name("owner")
        assert own is not None
        (tmo,) = await pic.until(lambda p: _kind(p, "timeout"), what="the timeout node")
        assert tmo["supervisor"] == own["pid"] and tmo["label"] == "timeout"
        assert pic.by_name("direct")["supervisor"] == tmo["pid"]  # type: ignore[index]
        (group,) = _kind(pic, "taskgroup")
        assert group["supervisor"] == tmo["pid"]
        assert pic.by_name("in-group")["supervisor"] == group["pid"]  # type: ignore[index]

        info = await client.command("inspect", pid=tmo["pid"])
        assert info["kind"] == "timeout" and info["timeout_state"] == "active" and info["task"] == own["pid"]
        assert 0 < info["remaining_s"] <= 30 and info["deadline"] > info["started_at"]
        assert info["children"] == [pic.by_name("direct")["pid"]]  # type: ignore[index]
        owner_info = await client.command("inspect", pid=own["pid"])
        assert [t["pid"] for t in owner_info["timeouts"]] == [tmo["pid"]]
        preview = (await client.command("inspect", pid=pic.by_name("direct")["pid"]))["cancel_preview"]  # type: ignore[index]
        assert any(f"timeout {tmo['pid']}" in line for line in preview), preview

        aio.call(lambda: gate[0].set())
        await pic.until(lambda p: p.exits(pid=tmo["pid"]), what="the timeout's end")
        assert pic.exits(pid=tmo["pid"])[0]["reason"] == "expired"
        # what the timeout held moves to its task; the group's cancelled child ended with the group
        await pic.until(lambda p: p.by_name("direct")["supervisor"] == own["pid"], what="direct moved")  # type: ignore[index]
        await pic.until(lambda p: p.exits(name="in-group"), what="the group's child cancelled")
        assert aio.call(lambda: list(outcome)) == ["timed out"]
    finally:
        await client.close()


async def test_a_timeout_without_a_deadline_is_not_drawn_and_one_met_later_is(aio: LoopHost) -> None:
    gate: list[asyncio.Event] = []

    async def owner() -> None:
        gate.append(asyncio.Event())
        async with asyncio.timeout(None) as cm:
            await gate[0].wait()
            cm.reschedule(asyncio.get_running_loop().time() + 60)
            await forever()

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="owner")
        own = await pic.until(lambda p: p.by_name("owner"), what="the owner")
        await pic.until(lambda p: p.stats, what="a sampling scan")  # the timers were read
        assert _kind(pic, "timeout") == []
        aio.call(lambda: gate[0].set())
        (tmo,) = await pic.until(lambda p: _kind(p, "timeout", own["pid"]), what="the timeout once it has a deadline")
        info = await client.command("inspect", pid=tmo["pid"])
        assert 50 < info["remaining_s"] <= 60
    finally:
        await client.close()


async def test_a_taskgroup_failing_at_once_shows_its_siblings_cancelled(aio: LoopHost) -> None:
    async def fails() -> None:
        await asyncio.sleep(0.005)
        raise ValueError("boom")

    async def owner() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(forever(), name="sib-1")
            tg.create_task(forever(), name="sib-2")
            tg.create_task(fails(), name="failing")

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="owner")  # everything ends in a few ms: within the agent's lazy delay
        await pic.until(lambda p: p.exits(name="owner"), what="the owner's crash")
        spawns = {e["name"] or e["label"]: e for e in pic.events if e["ev"] == "spawn"}
        own, group = spawns["owner"], spawns["taskgroup"]
        assert group["supervisor"] == own["pid"]
        assert spawns["failing"]["supervisor"] == group["pid"]
        for name in ("sib-1", "sib-2"):
            assert spawns[name]["supervisor"] == group["pid"]
            (ex,) = pic.exits(name=name)
            assert ex["state"] == "cancelled" and ex["reason_kind"] == "shutdown"
        crash = pic.exits(name="failing")[0]
        assert crash["exception"] == "ValueError" and crash["report"]["supervisor"] == group["pid"]
        assert pic.exits(name="owner")[0]["exception"] == "ExceptionGroup"
        await pic.until(lambda p: p.exits(pid=group["pid"]), what="the group's end")
    finally:
        await client.close()


async def test_a_gather_whose_child_fails_at_once_shows_its_other_children(aio: LoopHost) -> None:
    async def fails() -> None:
        raise ValueError("boom")

    async def owner() -> None:
        await asyncio.gather(asyncio.sleep(0.01), fails())

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="owner")
        failing = "test_a_gather_whose_child_fails_at_once_shows_its_other_children.<locals>.fails"
        await pic.until(
            lambda p: p.exits(name="owner") and p.exits(label="sleep") and p.exits(label=failing),
            what="the owner, the sleep and the failing child (frames may interleave under load)",
        )
        spawns = [e for e in pic.events if e["ev"] == "spawn"]
        (gather,) = [e for e in spawns if e["kind"] == "gather"]
        kids = {e["label"]: e for e in spawns if e["supervisor"] == gather["pid"]}
        assert set(kids) == {"sleep", failing}
        assert pic.exits(label="sleep")[0]["state"] == "done"
    finally:
        await client.close()

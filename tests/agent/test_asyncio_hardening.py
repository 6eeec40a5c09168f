"""The asyncio source must never hurt its host: odd coroutines, hostile
objects, a blocked loop, a task storm, a loop replaced, a task factory
replaced. Real loops, a real agent, the real protocol on loopback."""

from __future__ import annotations

import asyncio
import collections.abc
import logging
import sys
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import pytest

import agent
from agent import protocol as P
from agent.client import AgentClient, AgentError
from tests.agent.aio_host import LoopHost, Picture, attach, hosted
from tests.agent.conftest import OP_TOKEN

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def aio() -> Iterator[LoopHost]:
    yield from hosted()


async def forever() -> None:
    await asyncio.sleep(3600)


class Hostile(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine that cannot be printed and refuses every attribute asked of it."""

    def __init__(self) -> None:
        object.__setattr__(self, "_c", forever())

    def send(self, value: Any) -> Any:
        return object.__getattribute__(self, "_c").send(value)

    def throw(self, *args: Any) -> Any:
        return object.__getattribute__(self, "_c").throw(*args)

    def close(self) -> None:
        object.__getattribute__(self, "_c").close()

    def __await__(self) -> Generator[Any, None, Any]:
        return object.__getattribute__(self, "_c").__await__()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no attribute {name} for you")


class SlowRepr:
    def __repr__(self) -> str:
        time.sleep(10)
        return "slow"

    __str__ = __repr__


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("unprintable exception")


async def test_unprintable_coroutines_and_absurd_names_are_shown_safely(aio: LoopHost) -> None:
    def make() -> None:
        aio.loop.create_task(Hostile(), name="hostile")  # type: ignore[arg-type]
        t = aio.loop.create_task(forever())
        t.set_name("n" * 100_000)

    aio.call(make)
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        rec = await pic.until(lambda p: p.by_name("hostile"))
        assert rec["label"] == "tests.agent.test_asyncio_hardening.Hostile"
        long = next(p for p in pic.procs.values() if (p.get("name") or "").startswith("nnn"))
        assert len(long["name"]) == 200
        info = await client.command("inspect", pid=rec["pid"])
        assert info["stack"] == [] and info["awaitable"] == "tests.agent.test_asyncio_hardening.Hostile"
        assert aio.agent.source.hook_errors == 0
    finally:
        await client.close()


async def test_huge_and_hostile_objects_in_frames_and_exceptions_cost_nothing(aio: LoopHost) -> None:
    async def holder() -> None:
        big = b"x" * (50 << 20)
        slow = SlowRepr()
        await asyncio.sleep(3600)
        del big, slow

    async def bad_str() -> None:
        await asyncio.sleep(0)
        raise BadStr()

    async def huge_message() -> None:
        await asyncio.sleep(0)
        raise ValueError("y" * (5 << 20))

    aio.spawn(holder, name="holder")
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        rec = await pic.until(lambda p: p.by_name("holder"))
        t0 = time.monotonic()
        info = await client.command("inspect", pid=rec["pid"])
        assert time.monotonic() - t0 < 2.0
        assert info["waits_on"]["kind"] == "sleep" and "slow" not in str(info)
        assert info["memory"] > 50 << 20  # the frame's 50 MB, counted without calling SlowRepr's methods
        aio.spawn(bad_str, name="bad-str")
        aio.spawn(huge_message, name="huge")
        await pic.until(lambda p: p.exits(name="bad-str") and p.exits(name="huge"), what="both crashes")
        bad = pic.exits(name="bad-str")[0]["report"]
        assert bad["exception"] == "BadStr" and "Traceback" in bad["traceback"]
        huge = pic.exits(name="huge")[0]["report"]
        assert len(huge["traceback"]) < 20_000 and len(huge["exceptions"][0]["message"]) <= 2000
    finally:
        await client.close()


async def test_a_loop_blocked_for_seconds_is_reported_and_commands_time_out() -> None:
    h = LoopHost(command_timeout=0.5, block_threshold=0.2)
    try:
        client = await attach(h)
        pic = await Picture(client).sync()
        release = threading.Event()

        async def blocker() -> None:
            await asyncio.sleep(0)
            release.wait(10)  # a blocking call on the loop: the bug under observation

        h.spawn(blocker, name="blocker")
        ev = await pic.until(lambda p: [e for e in p.events if e["ev"] == "loop_blocked"], what="loop_blocked")
        rec = pic.by_name("blocker") or {}
        assert ev[0]["name"] == "blocker" and ev[0]["pid"] == rec.get("pid")
        assert any(f["function"].endswith("blocker") for f in ev[0]["stack"])
        assert (await client.command("ping"))["pong"] is True  # the agent still serves
        with pytest.raises(AgentError) as e:
            await client.command("inspect", pid=rec["pid"])
        assert e.value.code == P.E_TIMEOUT
        # sampled while it held the loop: its time in steps
        await pic.until(lambda p: (p.procs.get(rec["pid"]) or {}).get("handler_time", 0) > 0, what="time in steps")
        release.set()
        await pic.until(lambda p: [e for e in p.events if e["ev"] == "loop_unblocked"], what="loop_unblocked")
        await client.close()
    finally:
        h.stop()


async def test_fifty_thousand_tasks_a_second_do_not_hurt_the_host(aio: LoopHost) -> None:
    client = await attach(aio)
    try:
        await Picture(client).sync()

        async def storm() -> float:
            async def short() -> None:
                pass

            t0 = time.perf_counter()
            for _ in range(10):
                batch = [asyncio.create_task(short()) for _ in range(5000)]
                await asyncio.gather(*batch)
            return time.perf_counter() - t0

        took = aio.submit(storm()).result(60)
        assert took < 10, f"50,000 tasks took {took:.1f} s"
        src = aio.agent.source
        assert src.hook_errors == 0
        assert len(aio.agent.collector.buf) <= aio.agent.collector.limit
        assert (await client.command("ping"))["pong"] is True
        # a fresh observer gets a consistent picture: the storm's tasks are gone
        fresh = await attach(aio, "read")
        snap = await fresh.read_snapshot()
        await fresh.close()
        assert sum(1 for p in snap["procs"] if p["kind"] == "task") <= 5
        assert src.created_total >= 50_000 and src.finished_total >= 50_000
    finally:
        await client.close()


async def test_asyncio_run_twice_leaves_the_second_run_alone_and_the_agent_serving() -> None:
    before = set(threading.enumerate())
    started: list[Any] = []
    out: dict[str, Any] = {}

    def app() -> None:
        async def first() -> None:
            started.append(agent.start(None, "127.0.0.1:0", token=OP_TOKEN))
            await asyncio.sleep(0)

        async def second() -> str:
            loop = asyncio.get_running_loop()
            out["factory"] = loop.get_task_factory()
            t = asyncio.create_task(asyncio.sleep(0, "ok"))
            return await t

        asyncio.run(first())
        out["second"] = asyncio.run(second())

    th = threading.Thread(target=app)
    th.start()
    th.join(20)
    ag = started[0]
    try:
        assert out == {"factory": None, "second": "ok"}
        client = await AgentClient.connect("127.0.0.1", ag.port, token=OP_TOKEN)
        try:
            snap = await client.read_snapshot()
            assert [p["kind"] for p in snap["procs"]] == ["loop"]
            assert (await client.command("ping"))["pong"] is True
            with pytest.raises(AgentError):
                await client.command("inspect", pid=snap["procs"][0]["pid"] + "x")
        finally:
            await client.close()
    finally:
        ag.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked


async def test_an_application_that_replaces_the_task_factory_keeps_working(aio: LoopHost) -> None:
    made: list[str] = []

    def own_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
        made.append("app")
        return asyncio.Task(coro, loop=loop, **kw)

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.call(lambda: aio.loop.set_task_factory(own_factory))
        aio.spawn(forever, name="after-replace")
        assert made == ["app"]
        rec = await pic.until(lambda p: p.by_name("after-replace"), timeout=8, what="the adopted task")
        assert rec["origin"] == "adopted"
        await pic.until(lambda p: p.stats.get("factory_replaced") is True, what="factory_replaced in the samples")
        assert aio.agent.source.hook_errors == 0
    finally:
        await client.close()


async def test_an_application_factory_that_chains_keeps_the_tree_exact(aio: LoopHost) -> None:
    def chain() -> None:
        prev = aio.loop.get_task_factory()

        def wrapped(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> asyncio.Task[Any]:
            assert prev is not None
            return prev(loop, coro, **kw)  # type: ignore[no-any-return]

        aio.loop.set_task_factory(wrapped)

    async def main() -> None:
        await asyncio.create_task(forever(), name="chained-child")

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.call(chain)
        aio.spawn(main, name="chained-main")
        child = await pic.until(lambda p: p.by_name("chained-child"))
        main_rec = pic.by_name("chained-main")
        assert main_rec is not None and child["parent"] == main_rec["pid"] and child["origin"] == "task"
    finally:
        await client.close()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+ (run by make pytest-asyncio-versions)")
async def test_eager_tasks_are_tracked_with_their_children(aio: LoopHost) -> None:
    async def eager_parent() -> None:
        await asyncio.create_task(forever(), name="eager-child")

    aio.call(lambda: aio.loop.set_task_factory(asyncio.eager_task_factory))  # type: ignore[attr-defined]
    aio.call(lambda: None)
    aio.agent.stop()
    aio.start_agent()
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(eager_parent, name="eager-parent")
        child = await pic.until(lambda p: p.by_name("eager-child"))
        parent = pic.by_name("eager-parent")
        assert parent is not None and child["parent"] == parent["pid"]
    finally:
        await client.close()


async def test_stopping_the_agent_gives_the_loop_back_as_it_was() -> None:
    h = LoopHost(start_agent=False)
    try:

        def app_handler(loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
            pass

        h.call(lambda: h.loop.set_exception_handler(app_handler))
        record_factory = logging.getLogRecordFactory()
        h.start_agent()
        assert h.call(lambda: h.loop.get_task_factory()) is not None
        assert logging.getLogRecordFactory() != record_factory
        h.agent.stop()
        h.agent = None
        assert h.call(lambda: h.loop.get_task_factory()) is None
        assert h.call(lambda: h.loop.get_exception_handler()) is app_handler
        assert logging.getLogRecordFactory() == record_factory
        assert h.submit(asyncio.sleep(0, "still runs")).result(5) == "still runs"
    finally:
        h.stop()

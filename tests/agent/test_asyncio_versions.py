"""What the asyncio source does differently on Python 3.12+ (run by
``make pytest-asyncio-versions`` on 3.12 and 3.13; skipped on 3.11):
``wait_for`` is built on ``asyncio.timeout`` and drawn as a timeout scope;
eager tasks (``asyncio.eager_task_factory``) that finish in their first step
and ones that do not; and ``asyncio.Task(..., eager_start=True)`` built
directly, which no task factory sees (aiohttp does it), adopted."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.aio_host import LoopHost, Picture, attach, hosted

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ (run by make pytest-asyncio-versions)"),
    pytest.mark.timeout(60),
]


@pytest.fixture
def aio() -> Iterator[LoopHost]:
    yield from hosted()


@pytest.fixture
def eager() -> Iterator[LoopHost]:
    """A loop whose application set ``eager_task_factory`` before the agent came (which chains with it)."""
    before = set(threading.enumerate())
    h = LoopHost(start_agent=False)
    h.call(lambda: h.loop.set_task_factory(asyncio.eager_task_factory))  # type: ignore[attr-defined,unused-ignore]
    h.start_agent()
    h.call(lambda: None)  # the agent's factory is installed (queued before this)
    assert h.call(lambda: h.loop.get_task_factory()) == h.agent.source._factory
    yield h
    h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


async def forever() -> None:
    await asyncio.sleep(3600)


def _kind(pic: Picture, kind: str) -> list[dict[str, Any]]:
    return [p for p in pic.procs.values() if p.get("kind") == kind]


async def test_wait_for_is_drawn_as_a_timeout_scope_holding_what_is_created_inside(aio: LoopHost) -> None:
    gate: list[asyncio.Event] = []

    async def body() -> str:
        gate.append(asyncio.Event())
        asyncio.get_running_loop().create_task(forever(), name="in-wait-for")
        await gate[0].wait()
        return "body done"

    async def owner() -> None:
        assert await asyncio.wait_for(body(), 30) == "body done"
        await forever()

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="wf-owner")
        await pic.until(lambda p: p.by_name("in-wait-for"), what="the task created inside wait_for")
        own = pic.by_name("wf-owner")
        assert own is not None
        (tmo,) = await pic.until(lambda p: _kind(p, "timeout"), what="wait_for's timeout node")
        assert tmo["supervisor"] == own["pid"]
        await pic.until(lambda p: p.by_name("in-wait-for")["supervisor"] == tmo["pid"], what="the task under it")  # type: ignore[index]
        info = await client.command("inspect", pid=tmo["pid"])
        assert info["kind"] == "timeout" and info["task"] == own["pid"] and 0 < info["remaining_s"] <= 30

        aio.call(lambda: gate[0].set())
        await pic.until(lambda p: p.exits(pid=tmo["pid"]), what="the timeout's end with wait_for")
        assert pic.exits(pid=tmo["pid"])[0]["reason"] != "expired"
        # what it held moves back to its task
        await pic.until(lambda p: p.by_name("in-wait-for")["supervisor"] == own["pid"], what="moved back")  # type: ignore[index]
    finally:
        await client.close()


async def test_eager_tasks_that_finish_in_their_first_step_are_counted_and_their_crash_reported(
    eager: LoopHost,
) -> None:
    async def quick() -> int:
        return 7

    async def boom() -> None:
        raise ValueError("eager boom in the first step")

    src = eager.agent.source
    client = await attach(eager)
    try:
        pic = await Picture(client).sync()
        created, finished = eager.call(lambda: (src.created_total, src.finished_total))

        def make() -> tuple[bool, int, bool]:
            t = eager.loop.create_task(quick(), name="eager-quick")
            b = eager.loop.create_task(boom(), name="eager-boom")
            return t.done(), t.result(), b.done()

        # done inside create_task: the factory notes tasks already finished
        assert eager.call(make) == (True, 7, True)
        await pic.until(lambda p: p.exits(name="eager-boom"), what="the eager task's crash")
        (ex,) = pic.exits(name="eager-boom")
        assert ex["exception"] == "ValueError" and "eager boom" in ex["report"]["traceback"]
        assert any(f["function"] == "boom" and f["own"] for f in ex["report"]["exceptions"][0]["frames"])
        # its coroutine is dropped after that first step (get_coro() is None, and crashed
        # the process on 3.12.0-3.12.4): the name comes from the factory's argument
        (spawned,) = [e for e in pic.events if e["ev"] == "spawn" and e["name"] == "eager-boom"]
        assert spawned["label"].endswith("boom") and spawned["origin"] == "task"
        assert eager.call(lambda: (src.created_total - created, src.finished_total - finished)) == (2, 2)
        assert not pic.exits(name="eager-quick")  # shorter than LAZY_DELAY: counted, not drawn
        assert src.hook_errors == 0
    finally:
        await client.close()


async def test_eager_tasks_that_do_not_finish_in_their_first_step_are_drawn_with_creator_and_line(
    eager: LoopHost,
) -> None:
    started: list[str] = []

    async def child() -> None:
        started.append("first step")
        await forever()

    async def main() -> None:
        t = asyncio.get_running_loop().create_task(child(), name="eager-pending")
        assert started == ["first step"]  # ran eagerly, inside create_task
        await t

    client = await attach(eager)
    try:
        pic = await Picture(client).sync()
        eager.spawn(main, name="eager-main")
        kid = await pic.until(lambda p: p.by_name("eager-pending"), what="the eager child")
        parent = pic.by_name("eager-main")
        assert parent is not None and kid["parent"] == parent["pid"] and kid["origin"] == "task"
        assert kid["created_at"].startswith(__file__) or "test_asyncio_versions.py" in kid["created_at"]
        info = await client.command("inspect", pid=kid["pid"])
        assert info["waits_on"]["kind"] == "sleep"
    finally:
        await client.close()


async def test_a_task_built_directly_with_eager_start_is_adopted_under_its_awaiter(aio: LoopHost) -> None:
    async def owner() -> None:
        # what aiohttp does on 3.12+: no task factory sees this task
        t = asyncio.Task(forever(), loop=asyncio.get_running_loop(), eager_start=True, name="built-directly")  # type: ignore[call-arg,unused-ignore]
        await t

    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="direct-owner")
        got = await pic.until(lambda p: p.by_name("built-directly"), timeout=10, what="the adopted task")
        own = pic.by_name("direct-owner")
        assert own is not None
        assert got["origin"] == "adopted" and got["supervisor"] == own["pid"]
        assert aio.agent.source.hook_errors == 0
    finally:
        await client.close()

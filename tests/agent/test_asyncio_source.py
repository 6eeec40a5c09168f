"""The asyncio source end to end: a plain asyncio application's loop in a
thread, a real agent, the real protocol through ``AgentClient`` on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from agent import protocol as P
from agent.client import AgentError
from tests.agent.aio_host import LoopHost, Picture, attach, hosted

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def aio() -> Iterator[LoopHost]:
    yield from hosted()


async def forever() -> None:
    await asyncio.sleep(3600)


async def test_handshake_says_asyncio_and_offers_only_what_tasks_support(aio: LoopHost) -> None:
    op = await attach(aio)
    ro = await attach(aio, "read")
    try:
        assert op.hello["node"]["node_kind"] == "asyncio"
        assert op.welcome["node_kind"] == "asyncio"
        assert "cancel" in op.welcome["commands"]
        for cmd in ("kill", "suspend", "resume", "send", "trace", "restart_child", "mailbox"):
            assert cmd not in op.welcome["commands"]
        assert "cancel" not in ro.welcome["commands"] and "inspect" in ro.welcome["commands"]
        with pytest.raises(AgentError) as e:
            await op.command("suspend", pid="<0.1.0>")
        assert e.value.code == P.E_UNKNOWN_COMMAND and "asyncio" in e.value.message
    finally:
        await op.close()
        await ro.close()


async def test_snapshot_shows_tasks_under_their_creator_with_creation_site(aio: LoopHost) -> None:
    async def main() -> None:
        kids = [asyncio.create_task(forever(), name="child-a"), asyncio.create_task(forever(), name="child-b")]
        await asyncio.wait(kids)

    aio.spawn(main, name="main")
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        await pic.until(lambda p: p.by_name("child-b"), what="child-b")
        root = next(p for p in pic.procs.values() if p["kind"] == "loop")
        main_rec = pic.by_name("main")
        assert main_rec is not None and main_rec["supervisor"] == root["pid"]
        assert main_rec["label"].endswith("<locals>.main")
        a = pic.by_name("child-a")
        assert a is not None
        assert a["supervisor"] == main_rec["pid"] and a["parent"] == main_rec["pid"]
        assert a["label"] == "forever" and a["kind"] == "task"
        assert a["created_at"].startswith(__file__) and "in test_snapshot" in a["created_at"]
    finally:
        await client.close()


async def test_taskgroup_is_a_scope_and_a_failing_child_cancels_its_siblings(aio: LoopHost) -> None:
    go = asyncio.Event()
    host_go: list[asyncio.Event] = []

    async def fails() -> None:
        await host_go[0].wait()
        raise ValueError("card declined (token=sk_live_123)") from KeyError("the cause")

    async def owner() -> None:
        host_go.append(asyncio.Event())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(forever(), name="sibling-1")
            tg.create_task(forever(), name="sibling-2")
            tg.create_task(fails(), name="failing")

    aio.spawn(owner, name="owner")
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        await pic.until(lambda p: p.by_name("failing") and p.by_name("sibling-2"), what="the group's tasks")
        own = pic.by_name("owner")
        s1 = pic.by_name("sibling-1")
        assert own is not None and s1 is not None
        scope = pic.procs[s1["supervisor"]]
        assert scope["kind"] == "taskgroup" and scope["supervisor"] == own["pid"]
        assert pic.by_name("failing")["supervisor"] == scope["pid"]  # type: ignore[index]
        fail_pid = pic.by_name("failing")["pid"]  # type: ignore[index]
        preview = (await client.command("inspect", pid=s1["pid"]))["cancel_preview"]
        assert any(f"TaskGroup {scope['pid']}" in line and "2 sibling(s)" in line for line in preview), preview
        aio.call(lambda: host_go[0].set())
        go.set()
        await pic.until(lambda p: p.exits(name="owner"), what="the owner's exit")
        crash = pic.exits(pid=fail_pid)[0]
        assert crash["reason_kind"] == "exception" and crash["exception"] == "ValueError"
        rep = crash["report"]
        assert rep["kind"] == "task" and rep["supervisor"] == scope["pid"]
        assert [e["relation"] for e in rep["exceptions"]][:2] == ["raised", "cause"]
        assert "sk_live_123" not in rep["traceback"] and "sk_live_123" not in crash["reason"]
        assert any(f["function"] == "fails" and f["own"] for f in rep["exceptions"][0]["frames"])
        assert [a["pid"] for a in rep["ancestry"]][-3:] == [own["pid"], scope["pid"], fail_pid]
        for name in ("sibling-1", "sibling-2"):
            (ex,) = pic.exits(name=name)
            assert ex["state"] == "cancelled" and ex["reason_kind"] == "shutdown"
        assert pic.exits(name="owner")[0]["exception"] == "ExceptionGroup"
        await pic.until(lambda p: scope["pid"] not in p.procs, what="the scope's exit")
    finally:
        await client.close()


async def test_gather_is_a_scope_under_the_awaiting_task(aio: LoopHost) -> None:
    async def main() -> None:
        await asyncio.gather(forever(), forever())

    aio.spawn(main, name="gatherer")
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        scope = await pic.until(lambda p: next((x for x in p.procs.values() if x["kind"] == "gather"), None))
        g = pic.by_name("gatherer")
        assert g is not None and scope["supervisor"] == g["pid"]

        def both(p: Picture) -> list[dict[str, Any]] | None:
            kids = [x for x in p.procs.values() if x.get("supervisor") == scope["pid"]]
            return kids if len(kids) >= 2 else None  # they may arrive in different frames

        kids = await pic.until(both, what="both of the gather's children")
        assert len(kids) == 2 and all(k["label"] == "forever" for k in kids)
        info = await client.command("inspect", pid=g["pid"])
        assert info["waits_on"]["kind"] == "gather"
    finally:
        await client.close()


async def test_tasks_from_before_attach_are_adopted_under_the_task_awaiting_them() -> None:
    h = LoopHost(start_agent=False)
    try:

        async def main() -> None:
            inner = asyncio.create_task(forever(), name="awaited")
            await inner

        h.spawn(main, name="early")
        h.call(lambda: None)
        h.start_agent()
        client = await attach(h)
        try:
            pic = await Picture(client).sync()
            await pic.until(lambda p: p.by_name("awaited"), what="the adopted tasks")
            early, awaited = pic.by_name("early"), pic.by_name("awaited")
            assert early is not None and awaited is not None
            assert early["origin"] == "adopted" and early["created_at"] is None
            assert awaited["supervisor"] == early["pid"]
            info = await client.command("inspect", pid=early["pid"])
            assert info["waits_on"] == {"kind": "task", "pid": awaited["pid"], "name": "awaited"}
        finally:
            await client.close()
    finally:
        h.stop()


async def test_a_task_from_another_thread_says_so(aio: LoopHost) -> None:
    client = await attach(aio)
    try:
        pic = await Picture(client).sync()
        aio.submit(forever())
        rec = await pic.until(lambda p: next((x for x in p.procs.values() if x.get("label") == "forever"), None))
        assert rec["origin"] == "threadsafe" and rec["created_at"] is None
    finally:
        await client.close()


async def test_inspect_shows_the_await_chain_and_what_it_waits_on(aio: LoopHost) -> None:
    objs: dict[str, Any] = {}

    async def locked() -> None:
        await objs["lock"].acquire()

    async def reader() -> None:
        await objs["queue"].get()

    async def nested() -> None:
        await middle()

    async def middle() -> None:
        await asyncio.sleep(3600)

    async def setup() -> None:
        objs["lock"] = asyncio.Lock()
        await objs["lock"].acquire()
        objs["queue"] = asyncio.Queue()

    aio.submit(setup()).result(5)
    for fn, name in ((locked, "locked"), (reader, "reader"), (nested, "nested")):
        aio.spawn(fn, name=name)
    client = await attach(aio, "read")
    try:
        pic = await Picture(client).sync()
        await pic.until(lambda p: p.by_name("nested"))
        got = {}
        for name in ("locked", "reader", "nested"):
            rec = pic.by_name(name)
            assert rec is not None
            got[name] = await client.command("inspect", pid=rec["pid"])
        assert got["locked"]["waits_on"]["kind"] == "lock" and "locked" in got["locked"]["waits_on"]["object"]
        assert got["reader"]["waits_on"]["kind"] == "queue"
        n = got["nested"]
        assert n["waits_on"] == {"kind": "sleep", "function": "sleep", "delay": 3600}
        assert [f["function"] for f in n["stack"]][:3] == [
            "test_inspect_shows_the_await_chain_and_what_it_waits_on.<locals>.nested",
            "test_inspect_shows_the_await_chain_and_what_it_waits_on.<locals>.middle",
            "sleep",
        ]
        assert n["task_state"] == "pending" and n["cancelling"] == 0 and n["age_s"] >= 0
        with pytest.raises(AgentError) as e:
            await client.command("inspect", pid="<0.99999.0>")
        assert e.value.code == P.E_NO_SUCH_PROCESS
    finally:
        await client.close()


async def test_cancel_is_for_operators_and_the_task_exits_cancelled(aio: LoopHost, caplog: Any) -> None:
    aio.spawn(forever, name="victim")
    op = await attach(aio)
    ro = await attach(aio, "read")
    try:
        pic = await Picture(op).sync()
        victim = await pic.until(lambda p: p.by_name("victim"))
        with pytest.raises(AgentError) as e:
            await ro.command("cancel", pid=victim["pid"])
        assert e.value.code == P.E_NOT_PERMITTED
        with caplog.at_level(logging.INFO, logger="agent.audit"):
            res = await op.command("cancel", pid=victim["pid"], reason="stuck")
        assert res == {"pid": victim["pid"], "cancelled": True, "cancelling": 1}
        assert any("cancel" in r.getMessage() and victim["pid"] in r.getMessage() for r in caplog.records)
        await pic.until(lambda p: p.exits(pid=victim["pid"]))
        assert pic.exits(pid=victim["pid"])[0]["state"] == "cancelled"
        with pytest.raises(AgentError) as e:
            await op.command("cancel", pid=victim["pid"])
        assert e.value.code == P.E_NO_SUCH_PROCESS
        root = next(p for p in pic.procs.values() if p["kind"] == "loop")
        with pytest.raises(AgentError) as e:
            await op.command("cancel", pid=root["pid"])
        assert e.value.code == P.E_BAD_ARGS
    finally:
        await op.close()
        await ro.close()


async def test_loop_exception_handler_is_chained_and_callback_errors_become_crashes() -> None:
    h = LoopHost(start_agent=False)
    seen: list[dict[str, Any]] = []
    h.call(lambda: h.loop.set_exception_handler(lambda loop, ctx: seen.append(ctx)))
    h.start_agent()
    client = await attach(h)
    try:
        pic = await Picture(client).sync()

        def bad() -> None:
            raise RuntimeError("in a callback")

        h.loop.call_soon_threadsafe(bad)
        await pic.until(lambda p: p.exits(exception="RuntimeError"), what="the callback's crash")
        crash = pic.exits(exception="RuntimeError")[0]
        assert crash["report"]["kind"] == "callback" and "in a callback" in crash["reason"]
        assert h.call(lambda: len(seen)) == 1  # the application's handler still ran
    finally:
        await client.close()
        h.stop()

"""Mixed programs: an ``actors`` node running inside an aiohttp application,
observed with ``agent.start(MixedSource(node))``: one picture holds
the node's supervision tree and the application's other tasks (the loop, a
background task, request tasks), the node's process tasks are not drawn
twice, a task a process creates is drawn under that process, and both kinds
of commands work (kill a process, cancel a task)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

import actors  # noqa: E402
import agent  # noqa: E402
from agent.client import AgentClient  # noqa: E402
from agent.mixed import TASKS_NODE, MixedSource  # noqa: E402
from tests.agent.aio_host import LoopHost, Picture  # noqa: E402
from tests.agent.conftest import OP_TOKEN  # noqa: E402

pytestmark = pytest.mark.timeout(60)


async def helper() -> None:
    await asyncio.Event().wait()


async def keeper(proc: actors.Process) -> None:
    """A worker that starts a helper task of its own when asked (as a process may)."""
    helpers = []
    while True:
        if await proc.receive() == "help":
            helpers.append(asyncio.create_task(helper(), name=f"helper-of-{proc.pid}"))


async def idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


class App:
    """An aiohttp application with an actors node inside (started on the app's own loop)."""

    def __init__(self) -> None:
        self.node: actors.Node | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.gate: asyncio.Event | None = None
        self.bg: asyncio.Task[None] | None = None

    async def slow(self, request: web.Request) -> web.Response:
        assert self.gate is not None
        await self.gate.wait()
        return web.Response(text="slow")

    async def fail(self, request: web.Request) -> web.Response:
        raise RuntimeError("inventory down")

    async def background(self) -> None:
        await asyncio.Event().wait()

    async def start(self) -> None:
        self.gate = asyncio.Event()
        self.node = actors.Node(log_crashes=False)
        await self.node.__aenter__()
        await actors.start_supervisor(
            self.node,
            [actors.worker("keeper", keeper), actors.worker("idle", idle)],
            intensity=5,
            period=10,
            name="shop_sup",
        )
        self.bg = asyncio.create_task(self.background(), name="app-bg")
        app = web.Application()
        app.add_routes([web.get("/slow", self.slow), web.get("/fail", self.fail)])
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.node is not None:
            await self.node.shutdown()


@pytest.fixture
def mixed() -> Iterator[tuple[LoopHost, App]]:
    h = LoopHost(start_agent=False)
    app = App()
    h.submit(app.start()).result(10)
    assert app.node is not None
    h.agent = agent.start(MixedSource(app.node), "127.0.0.1:0", token=OP_TOKEN)
    yield h, app
    h.agent.stop()
    h.agent = None
    h.submit(app.stop()).result(10)
    h.stop()


def under(pic: Picture, pid: str) -> list[dict[str, Any]]:
    return [p for p in pic.procs.values() if p.get("supervisor") == pid]


async def test_one_picture_holds_the_supervision_tree_and_the_applications_tasks(mixed: tuple[LoopHost, App]) -> None:
    h, app = mixed
    client = await AgentClient.connect("127.0.0.1", h.agent.port, token=OP_TOKEN)
    try:
        assert client.hello["node"]["node_kind"] == "actors"
        assert client.hello["node"]["include_tasks"] is True
        pic = await Picture(client).sync()
        # the node's tree
        sup = next(p for p in pic.procs.values() if p.get("name") == "shop_sup")
        assert sup["kind"] == "supervisor"
        kids = {p["child_id"]: p for p in under(pic, sup["pid"])}
        assert set(kids) == {"keeper", "idle"}
        # the application's tasks, with their own pids, under the loop
        loop = next(p for p in pic.procs.values() if p["kind"] == "loop")
        assert loop["pid"].startswith(f"<{TASKS_NODE}.")
        bg = await pic.until(lambda p: p.by_name("app-bg"), what="the app's background task")
        assert bg["supervisor"] == loop["pid"] and bg["label"] == "App.background"
        # a process's body is a process, not a task too; its own helper task is drawn under it
        assert not [p for p in pic.procs.values() if p["kind"] == "task" and p.get("label") in ("keeper", "idle")]
        keeper_pid = kids["keeper"]["pid"]
        h.call(lambda: app.node.send(actors.Pid.parse(keeper_pid), "help"))  # type: ignore[union-attr]
        helper_task = await pic.until(lambda p: p.by_name(f"helper-of-{keeper_pid}"), what="the keeper's helper")
        assert helper_task["supervisor"] == keeper_pid and helper_task["kind"] == "task"

        async with aiohttp.ClientSession() as http:
            # a request task appears in the same picture, and finishes
            slow = asyncio.ensure_future(http.get(f"http://127.0.0.1:{app.port}/slow"))
            req = await pic.until(
                lambda p: next((x for x in p.procs.values() if str(x.get("label")).endswith("_handle_request")), None),
                what="the request's task",
            )
            info = await client.command("inspect", pid=req["pid"])
            assert info["waits_on"]["kind"] == "event"
            h.loop.call_soon_threadsafe(app.gate.set)  # type: ignore[union-attr]
            assert (await slow).status == 200
            await pic.until(lambda p: p.exits(pid=req["pid"]), what="the request task's exit")
            # a failing handler: a crash report, as on a plain asyncio node
            assert (await http.get(f"http://127.0.0.1:{app.port}/fail")).status == 500
            crash = await pic.until(lambda p: p.exits(exception="RuntimeError"), what="the handler's crash")
            assert crash[0]["report"]["kind"] == "logged"

        # both kinds of commands: kill a process (its supervisor restarts it), cancel a task
        info = await client.command("inspect", pid=kids["idle"]["pid"])
        assert info["pid"] == kids["idle"]["pid"]
        await client.command("kill", pid=kids["idle"]["pid"], reason="kill")
        await pic.until(lambda p: p.exits(pid=kids["idle"]["pid"]), what="the killed worker's exit")
        again = await pic.until(
            lambda p: next((x for x in under(p, sup["pid"]) if x.get("child_id") == "idle"), None),
            what="the worker restarted",
        )
        # the new process's task is recognised as the process once the tasks' source meets it (it is
        # not drawn a second time as a task)
        tasks = h.agent.source.tasks
        await pic.until(lambda p: again["pid"] in tasks._alias.values(), what="the new process's task recognised")
        assert not [p for p in pic.procs.values() if p["kind"] == "task" and p.get("label") == "idle"]
        res = await client.command("cancel", pid=bg["pid"])
        assert res["cancelled"] is True
        await pic.until(lambda p: p.exits(pid=bg["pid"]), what="the background task's exit")
        assert pic.exits(pid=bg["pid"])[0]["state"] == "cancelled"
        assert h.call(lambda: app.bg is not None and app.bg.cancelled())
    finally:
        await client.close()


def test_a_mixed_source_is_for_a_node() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match=r"MixedSource takes an actors\.Node, not"):
            MixedSource(loop)  # type: ignore[arg-type]
    finally:
        loop.close()

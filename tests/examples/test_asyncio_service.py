"""The demo asyncio service (a real aiohttp app under its own traffic, with a
flaky dependency), observed through its agent; and ``observer demo --asyncio``
showing both kinds of node at once."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter
from typing import Any

import pytest

from agent.client import AgentClient
from tests.agent.aio_host import Picture
from tests.observer import wait_for
from tests.observer.test_cli import Demo

pytest.importorskip("aiohttp")
pytestmark = pytest.mark.timeout(120)

TOKEN = "shop-token-0123456789abcdef"


async def test_the_shop_shows_its_task_tree_and_its_flaky_dependency_crashes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env.update({"OBSERVER_AGENT_TOKEN": TOKEN, "OBSERVER_DEMO_SEED": "3", "OBSERVER_DEMO_RPS": "40"})
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "examples.asyncio_service", env=env, stdin=pipe, stdout=pipe
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        m = re.match(r"agent (\S+):(\d+) http=\d+", line)
        assert m, line
        client = await AgentClient.connect(m.group(1), int(m.group(2)), token=TOKEN)
        try:
            pic = await Picture(client).sync()
            assert client.hello["node"]["node_kind"] == "asyncio"

            def consumers(p: Picture) -> list[dict[str, Any]]:
                return [x for x in p.procs.values() if str(x.get("name")).startswith("consumer-")]

            await pic.until(lambda p: len(consumers(p)) == 3, what="three consumers")
            group = pic.procs[consumers(pic)[0]["supervisor"]]
            assert group["kind"] == "taskgroup" and pic.procs[group["supervisor"]]["name"] == "consumers"

            def crash_kinds(p: Picture) -> Counter[tuple[str, str]]:
                return Counter((e["report"]["kind"], e["exception"]) for e in p.exits() if e.get("report"))

            await pic.until(
                lambda p: any(k == "logged" for k, _ in crash_kinds(p)), timeout=30, what="a failed request's crash"
            )
            logged = next(e["report"] for e in pic.exits() if e.get("report") and e["report"]["kind"] == "logged")
            assert logged["exception"] == "ExceptionGroup" and logged["message_text"].startswith("aiohttp.server")
        finally:
            await client.close()
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
def test_observer_demo_with_asyncio_attaches_both_kinds() -> None:
    demo = Demo("--asyncio")
    try:
        assert re.search(r"asyncio shop service \(pid \d+\)", demo.output)
        demo.login()

        def both() -> Any:
            nodes = {n["name"]: n for n in demo.get("/api/overview")["nodes"]}
            ok = all(n in nodes and nodes[n]["status"] == "up" for n in ("demo", "shop"))
            return ok and nodes

        nodes = wait_for(both, timeout=60, what="both nodes attached")
        assert nodes["demo"]["node"]["node_kind"] == "actors"
        assert nodes["shop"]["node"]["node_kind"] == "asyncio"
        tree = demo.get("/api/nodes/shop/tree")
        assert tree["tree"]["children"], tree["tree"]
    finally:
        assert demo.stop() == 0

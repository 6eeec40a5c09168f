"""An asyncio node's real frames match the protocol's JSON Schema too
(docs/protocol.schema.json): captured on a real socket, through the same
recording proxy as an actors node's (tests/agent/test_schema.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import jsonschema
import pytest

from agent import command_shapes as C
from agent.client import AgentClient, AgentError
from tests.agent.aio_host import LoopHost, Picture, hosted
from tests.agent.conftest import OP_TOKEN
from tests.agent.test_schema import SCHEMA_FILE, Tap, _kind, _shape

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def aio() -> Iterator[LoopHost]:
    yield from hosted()


async def test_an_asyncio_nodes_frames_match_the_schema(aio: LoopHost) -> None:
    gate: list[asyncio.Event] = []

    async def fails() -> None:
        await gate[0].wait()
        raise ValueError("boom")

    async def owner() -> None:
        gate.append(asyncio.Event())
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(3600), name="sibling")
            tg.create_task(fails(), name="failing")

    async def waiter() -> None:
        await asyncio.gather(asyncio.sleep(3600), asyncio.sleep(3600))

    tap = Tap(aio.agent.port)
    port = await tap.start()
    client = await AgentClient.connect("127.0.0.1", port, token=OP_TOKEN)
    try:
        pic = await Picture(client).sync()
        aio.spawn(owner, name="owner")
        aio.spawn(waiter, name="waiter")
        await pic.until(lambda p: p.by_name("failing") and p.by_name("waiter"), what="the tasks")
        waiter_pid = pic.by_name("waiter")["pid"]  # type: ignore[index]
        await client.command("inspect", pid=waiter_pid)
        cancelled = await client.command("cancel", pid=waiter_pid)
        with pytest.raises(AgentError):
            await client.command("kill", pid=waiter_pid)
        aio.call(lambda: gate[0].set())
        await pic.until(lambda p: p.exits(name="owner") and p.stats, what="the crash and samples")
        await client.command("snapshot")
        await client.read_snapshot()
    finally:
        await client.close()
        await tap.close()
    doc = json.loads(SCHEMA_FILE.read_text())
    defs = {k: v for k, v in doc.items() if k != "anyOf"}
    bad = []
    for who, frame in tap.frames:
        v = jsonschema.Draft202012Validator({**defs, "$ref": f"#/$defs/{_shape(who, frame)}"})
        bad += [f"{_kind(frame)}: {e.message} at {list(e.absolute_path)}" for e in v.iter_errors(frame)]
    assert bad == []
    v = jsonschema.Draft202012Validator({**defs, "$ref": f"#/$defs/{C.COMMAND_RESULTS['cancel'].__name__}"})
    assert list(v.iter_errors(cancelled)) == []
    kinds = {_kind(f) for _, f in tap.frames}
    assert {"hello", "welcome", "snapshot_chunk", "samples", "ev:spawn", "ev:exit", "cmd:cancel"} <= kinds

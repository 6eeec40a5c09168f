"""A small FastAPI app for ``test_fastapi_web.py`` and ``tests/agent/test_asyncio_fastapi.py``, served unmodified by
uvicorn under the agent's launcher: a quick route for load, a route held open
until released, a failing handler, a TaskGroup whose child fails once told to, and a
background task started by the lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

gate = asyncio.Event()
poison_gate = asyncio.Event()


cache: dict[str, int] = {"refreshes": 0}


async def cache_refresher() -> None:
    while True:
        cache["refreshes"] += 1
        await asyncio.sleep(0.2)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(cache_refresher(), name="cache-refresher")
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


@app.get("/ok")
async def ok() -> dict[str, str]:
    await asyncio.sleep(0)
    return {"ok": "yes"}


@app.get("/slow")
async def slow() -> dict[str, str]:
    await gate.wait()
    return {"slow": "done"}


@app.get("/release")
async def release() -> dict[str, str]:
    gate.set()
    return {"released": "yes"}


@app.get("/fail")
async def fail() -> dict[str, str]:
    raise ValueError("ledger refused (api_key=sk_live_fastapi)")


@app.get("/poison")
async def poison_batch() -> dict[str, str]:
    poison_gate.set()
    return {"poisoned": "yes"}


@app.get("/batch")
async def batch() -> dict[str, str]:
    started = [asyncio.Event(), asyncio.Event()]

    async def sibling(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.Event().wait()

    async def poison() -> None:
        for ready in started:
            await ready.wait()
        await poison_gate.wait()
        raise RuntimeError("poison batch item")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(sibling(started[0]), name="batch-sibling-1")
        tg.create_task(sibling(started[1]), name="batch-sibling-2")
        tg.create_task(poison(), name="batch-poison")
    return {"batch": "done"}

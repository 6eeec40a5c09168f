"""The processes ``python -m bench asyncio`` measures (one mode each):

* ``serve``: a real aiohttp app on loopback, with or without the agent;
* ``churn``: steady work (a small computation and a yield, in a loop) while
  short tasks are created and finished at ``--rate`` a second (0: as fast
  as the loop goes, and no work); prints ``{"work_per_s", "tasks_per_s"}``;
* ``crash``: tasks that fail, one every few milliseconds;
* ``pending``: many tasks waiting on one event;
* ``observe``: an observer reading everything an agent sends.

Each writes ``--ready-file`` (JSON: its ports) once it is ready; with an agent,
``churn`` and ``crash`` wait for an observer to attach before they start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import agent
from agent.client import AgentClient

TOKEN = "bench-token-0123456789abcdef"


def _ready(path: str, **info: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def _start_agent(on: bool) -> Any:
    return agent.start(None, "127.0.0.1:0", token=TOKEN) if on else None


async def _attached(ag: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while ag is not None and not ag.ready_sessions():
        if time.monotonic() > deadline:
            raise SystemExit("no observer attached")
        await asyncio.sleep(0.01)


async def serve(args: argparse.Namespace) -> None:
    from aiohttp import web  # optional dependency of the benchmark only

    async def hello(request: web.Request) -> web.Response:
        await asyncio.sleep(0)
        return web.Response(text="hello")

    app = web.Application()
    app.add_routes([web.get("/", hello)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ag = _start_agent(args.agent)
    _ready(args.ready_file, http_port=runner.addresses[0][1], agent_port=ag.port if ag else None)
    await asyncio.Event().wait()


async def churn(args: argparse.Namespace) -> None:
    ag = _start_agent(args.agent)
    _ready(args.ready_file, agent_port=ag.port if ag else None)
    await _attached(ag)

    async def short() -> None:
        pass

    created = [0]
    work = [0]
    t0 = time.perf_counter()
    end = t0 + args.seconds

    async def churner() -> None:
        if args.rate <= 0:
            while time.perf_counter() < end:
                await asyncio.gather(*[asyncio.create_task(short()) for _ in range(100)])
                created[0] += 100
            return
        per = max(1, round(args.rate / 100))  # a batch every 10 ms
        k = 0
        while time.perf_counter() < end:
            await asyncio.gather(*[asyncio.create_task(short()) for _ in range(per)])
            created[0] += per
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * 0.01 - time.perf_counter()))

    async def worker() -> None:
        while time.perf_counter() < end:
            sum(range(200))
            work[0] += 1
            await asyncio.sleep(0)

    jobs = [churner()] if args.rate <= 0 else [churner(), worker()]
    await asyncio.gather(*jobs)
    took = time.perf_counter() - t0
    print(json.dumps({"work_per_s": work[0] / took, "tasks_per_s": created[0] / took}), flush=True)
    if ag is not None:
        ag.stop()


async def crash(args: argparse.Namespace) -> None:
    ag = _start_agent(True)
    _ready(args.ready_file, agent_port=ag.port)
    await _attached(ag)

    async def fails(i: int) -> None:
        raise ValueError(f"bench crash {i}")

    tasks = []
    for i in range(args.count):
        t = asyncio.create_task(fails(i))
        tasks.append(t)
        await asyncio.sleep(args.every_ms / 1000)
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.Event().wait()


async def pending(args: argparse.Namespace) -> None:
    ev = asyncio.Event()
    tasks = [asyncio.create_task(ev.wait()) for _ in range(args.count)]
    ag = _start_agent(True)
    while ag.source.count() < len(tasks):  # noqa: ASYNC110 - adopted a chunk per loop step; no event says when
        await asyncio.sleep(0.01)
    _ready(args.ready_file, agent_port=ag.port, tasks=len(tasks))
    await ev.wait()


async def observe(args: argparse.Namespace) -> None:
    client = await AgentClient.connect("127.0.0.1", args.port, token=TOKEN)
    _ready(args.ready_file, attached=True)
    try:
        while not client.closed.is_set():
            try:
                await client.next_message(1.0)
            except TimeoutError:
                continue
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench._aio_host")
    p.add_argument("mode", choices=["serve", "churn", "crash", "pending", "observe"])
    p.add_argument("--ready-file", required=True)
    p.add_argument("--agent", type=int, default=0)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--every-ms", type=float, default=10.0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--rate", type=float, default=10_000.0)
    args = p.parse_args(argv)
    fn = {"serve": serve, "churn": churn, "crash": crash, "pending": pending, "observe": observe}[args.mode]
    try:
        asyncio.run(fn(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

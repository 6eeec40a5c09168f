"""A demo asyncio web service, observed: ``python -m examples.asyncio_service``.

A small shop on aiohttp (a real framework), written as asyncio programs are,
with no actors: ``GET /orders/{n}`` asks a flaky inventory dependency (slow
at times, failing at times, hanging now and then: the handler gives up after
a timeout) and a pricing step in a TaskGroup, then queues the order for a
TaskGroup of consumers; a cache refresher runs a ``gather`` every two
seconds; a reporter builds its report parts in a TaskGroup inside an
``asyncio.timeout(30)`` (its deadline); a traffic generator sends requests all along. Failed requests are
logged by aiohttp with their exception, which the agent turns into crash
reports; a consumer crashes now and then on a poison order.

Started by ``observer demo --asyncio``, it takes its settings from the
environment like ``observer.demo``: ``OBSERVER_AGENT_TOKEN`` and/or
``OBSERVER_AGENT_READ_TOKEN``, ``OBSERVER_DEMO_SEED``, and
``OBSERVER_DEMO_RPS`` (requests a second, default 20). It starts the agent
on 127.0.0.1 (a free port), prints ``agent 127.0.0.1:PORT http=PORT``, and
stops on SIGINT/SIGTERM or when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import threading
from typing import Any

import agent

AGENT_LINE = "agent "


class Shop:
    """The application: routes, a queue of orders and its consumers."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.orders: asyncio.Queue[int] = asyncio.Queue(maxsize=1000)
        self.cache: dict[str, int] = {}
        self.served = 0
        self.base = ""
        """The service's own URL (the dependency lives in the same app)."""

    async def inventory(self, request: Any) -> Any:
        """The flaky dependency (in the same app, so the demo is one process)."""
        from aiohttp import web

        roll = self.rng.random()
        if roll < 0.02:
            await asyncio.sleep(5)  # hangs: the caller's timeout fires first
        elif roll < 0.10:
            raise web.HTTPServiceUnavailable(text="inventory backend overloaded")
        await asyncio.sleep(self.rng.uniform(0.005, 0.12))
        return web.json_response({"sku": request.match_info["sku"], "stock": self.rng.randint(0, 20)})

    async def fetch_stock(self, http: Any, base: str, sku: str) -> int:
        async with asyncio.timeout(0.5), http.get(f"{base}/inventory/{sku}") as r:
            if r.status != 200:
                raise RuntimeError(f"inventory answered {r.status} for {sku}")
            stock: int = (await r.json())["stock"]
            return stock

    async def price(self, n: int) -> int:
        await asyncio.sleep(self.rng.uniform(0.001, 0.02))
        return 100 + n % 50

    async def order(self, request: Any) -> Any:
        from aiohttp import web

        n = int(request.match_info["n"])
        http = request.app["http"]
        async with asyncio.TaskGroup() as tg:
            stock = tg.create_task(self.fetch_stock(http, self.base, f"sku-{n % 30}"))
            price = tg.create_task(self.price(n))
        await self.orders.put(n)
        self.served += 1
        return web.json_response({"order": n, "stock": stock.result(), "price": price.result()})

    async def consumer(self, i: int) -> None:
        while True:
            n = await self.orders.get()
            await asyncio.sleep(self.rng.uniform(0.001, 0.05))
            if n % 97 == 13:
                raise ValueError(f"poison order {n} (consumer {i})")

    async def consumers(self) -> None:
        """Three consumers in a TaskGroup; when one dies on a poison order the
        group cancels the others, and the supervisor loop starts a new group."""
        while True:
            try:
                async with asyncio.TaskGroup() as tg:
                    for i in range(3):
                        tg.create_task(self.consumer(i), name=f"consumer-{i}")
            except* ValueError:
                await asyncio.sleep(0.5)

    async def refresh_one(self, key: str) -> None:
        await asyncio.sleep(self.rng.uniform(0.01, 0.3))
        self.cache[key] = self.rng.randint(0, 100)

    async def cache_refresher(self) -> None:
        while True:
            await asyncio.gather(*(self.refresh_one(f"k{i}") for i in range(4)))
            await asyncio.sleep(2)

    async def report_part(self, part: str) -> None:
        await asyncio.sleep(self.rng.uniform(8, 20))

    async def reporter(self) -> None:
        """A report's parts, built in a TaskGroup that must finish within the
        report's deadline (the timeout cancels the reporter, whose group
        then cancels the parts)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
                    for part in ("sales", "stock"):
                        tg.create_task(self.report_part(part), name=f"report-{part}")
            await asyncio.sleep(1)


async def traffic(base: str, http: Any, rps: float, rng: random.Random) -> None:
    """Requests at about ``rps`` a second, each in a task of its own."""
    pending: set[asyncio.Task[Any]] = set()

    async def one(n: int) -> None:
        with contextlib.suppress(Exception):
            async with http.get(f"{base}/orders/{n}") as r:
                await r.read()

    n = 0
    while True:
        n += 1
        t = asyncio.create_task(one(n), name=f"request-{n}")
        pending.add(t)
        t.add_done_callback(pending.discard)
        await asyncio.sleep(rng.expovariate(rps))


async def run(*, token: str | None, read_token: str | None, seed: int | None, rps: float, watch_stdin: bool) -> int:
    import aiohttp
    from aiohttp import web

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if watch_stdin:

        def watch() -> None:
            with contextlib.suppress(Exception):
                while sys.stdin.read(4096):
                    pass
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch, name="shop-stdin", daemon=True).start()
    ag = agent.start(None, "127.0.0.1:0", token=token, read_token=read_token)
    rng = random.Random(seed)
    shop = Shop(rng)
    http = aiohttp.ClientSession()
    app = web.Application()
    app["http"] = http
    app.add_routes([web.get("/orders/{n}", shop.order), web.get("/inventory/{sku}", shop.inventory)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = shop.base = f"http://127.0.0.1:{port}"
    try:
        async with http:
            print(f"{AGENT_LINE}127.0.0.1:{ag.port} http={port}", flush=True)
            async with asyncio.TaskGroup() as tg:
                jobs = [
                    tg.create_task(shop.consumers(), name="consumers"),
                    tg.create_task(shop.cache_refresher(), name="cache-refresher"),
                    tg.create_task(shop.reporter(), name="reporter"),
                    tg.create_task(traffic(base, http, rps, rng), name="traffic"),
                ]
                await stop.wait()
                for job in jobs:  # cancelled children end the group quietly
                    job.cancel()
    finally:
        await runner.cleanup()
        ag.stop()
    return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="shop: %(levelname)s %(name)s: %(message)s")
    # aiohttp logs each failed request with its exception: the agent turns
    # those into crash reports; keep them off the terminal
    quiet = logging.getLogger("aiohttp")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    token = os.environ.get("OBSERVER_AGENT_TOKEN") or None
    read_token = os.environ.get("OBSERVER_AGENT_READ_TOKEN") or None
    if not token and not read_token:
        print("asyncio_service: neither OBSERVER_AGENT_TOKEN nor OBSERVER_AGENT_READ_TOKEN is set", file=sys.stderr)
        return 2
    seed = os.environ.get("OBSERVER_DEMO_SEED")
    rps = float(os.environ.get("OBSERVER_DEMO_RPS") or 20)
    try:
        return asyncio.run(
            run(token=token, read_token=read_token, seed=int(seed) if seed else None, rps=rps, watch_stdin=True)
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

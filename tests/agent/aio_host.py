"""A plain asyncio application for the asyncio-source tests: its own loop in
its own thread (as a service runs), observed by a real agent on loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

import agent
from agent.client import AgentClient
from tests.agent.conftest import OP_TOKEN, READ_TOKEN

T = TypeVar("T")


class LoopHost:
    """An event loop running in a thread, with an agent watching it."""

    def __init__(self, loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop, **opts: Any):
        self.loop = loop_factory()
        self._running = threading.Event()
        self.thread = threading.Thread(target=self._main, name="aio-host", daemon=True)
        self.thread.start()
        self._running.wait(5)
        self.agent: Any = None
        if opts.pop("start_agent", True):
            self.start_agent(**opts)

    def start_agent(self, **opts: Any) -> Any:
        kw: dict[str, Any] = {"token": OP_TOKEN, "read_token": READ_TOKEN}
        kw.update(opts)
        self.agent = agent.start(self.loop, "127.0.0.1:0", **kw)
        return self.agent

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._running.set)
        self.loop.run_forever()

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` on the host loop (its task's origin is ``threadsafe``)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``fn()`` on the host loop's thread and return its result."""
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout)

    def spawn(self, coro_fn: Callable[[], Awaitable[Any]], name: str | None = None) -> asyncio.Task[Any]:
        """Create a task from the host loop's thread, as the application would
        (from a loop callback: its parent is the loop)."""
        return self.call(lambda: self.loop.create_task(coro_fn(), name=name))  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()

        async def drain() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if not self.loop.is_closed():
            try:
                self.submit(drain()).result(5)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


LOOP_NAMES = ("asyncio", "uvloop")
"""The loops an ``aio`` fixture may be parametrized over (see :func:`hosted`)."""


def hosted(loop: str = "asyncio") -> Iterator[LoopHost]:
    """The body of an ``aio`` fixture: a host on asyncio's loop or on uvloop (skipped
    where uvloop is not installed), stopped after, with a thread-leak check."""
    factory = asyncio.new_event_loop if loop == "asyncio" else pytest.importorskip("uvloop").new_event_loop
    before = set(threading.enumerate())
    h = LoopHost(factory)
    yield h
    h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


async def attach(h: LoopHost, role: str = "operator") -> AgentClient:
    tok = OP_TOKEN if role == "operator" else READ_TOKEN
    return await AgentClient.connect("127.0.0.1", h.agent.port, token=tok, role=role)


class Picture:
    """What an observer knows: the snapshot, then every event applied (a
    minimal stand-in for the observer's model, to wait on)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.procs: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.stats: dict[str, Any] = {}

    async def sync(self) -> Picture:
        snap = await self.client.read_snapshot()
        self.procs = {p["pid"]: p for p in snap["procs"]}
        return self

    def apply(self, m: dict[str, Any]) -> None:
        if m.get("t") == "samples":
            if m.get("node"):
                self.stats = m["node"]
            for row in m.get("rows") or ():
                rec = self.procs.get(row[0])
                if rec is not None:  # protocol.SAMPLE_FIELDS
                    rec.update(handled=row[4], handler_time=row[5], status=row[6])
            return
        if m.get("t") != "ev":
            return
        self.events.append(m)
        if m["ev"] == "spawn":
            self.procs[m["pid"]] = dict(m)
        elif m["ev"] == "update" and m["pid"] in self.procs:
            self.procs[m["pid"]].update(m)
        elif m["ev"] == "exit":
            self.procs.pop(m["pid"], None)

    async def until(self, pred: Callable[[Picture], Any], timeout: float = 5.0, what: str = "") -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            got = pred(self)
            if got:
                return got
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or pred}")
            try:
                self.apply(await self.client.next_message(left))
            except TimeoutError:
                continue

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((p for p in self.procs.values() if p.get("name") == name), None)

    def exits(self, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == "exit" and all(e.get(k) == v for k, v in fields.items())]

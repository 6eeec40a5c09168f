"""Fixtures: a real node in its own thread with a real agent on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import actors
import agent

T = TypeVar("T")

OP_TOKEN = "operator-token-for-tests-0123456789"
READ_TOKEN = "read-token-for-tests-9876543210"


class Host:
    """A node running in its own thread (as in a real service), with an agent."""

    def __init__(self, **agent_opts: Any) -> None:
        self.node = actors.Node.start_in_thread(log_crashes=False)
        opts: dict[str, Any] = {"token": OP_TOKEN, "read_token": READ_TOKEN}
        opts.update(agent_opts)
        self.agent = agent.start(self.node, "127.0.0.1:0", **opts)

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the node's loop and return its result."""
        return self.node.apply_threadsafe(fn)

    def run_async(self, coro: Any, timeout: float = 10.0) -> Any:
        return self.node.run_threadsafe(coro).result(timeout)

    def spawn(self, fn: Any, *args: Any, **kw: Any) -> actors.Pid:
        return self.run(lambda: self.node.spawn(fn, *args, **kw))

    def stop(self) -> None:
        self.agent.stop()
        self.node.stop_thread()


@pytest.fixture
def host() -> Iterator[Host]:
    before = set(threading.enumerate())
    h = Host()
    yield h
    h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not leaked, f"threads leaked: {leaked}"


async def connect(h: Host, role: str = "operator", token: str | None = None) -> agent.client.AgentClient:
    tok = token if token is not None else (OP_TOKEN if role == "operator" else READ_TOKEN)
    return await agent.client.AgentClient.connect("127.0.0.1", h.agent.port, token=tok, role=role)


async def next_event(
    client: agent.client.AgentClient, pred: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> dict[str, Any]:
    """The next pushed message matching ``pred`` (others skipped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise AssertionError("no matching message in time")
        msg = await client.next_message(left)
        if pred(msg):
            return msg

"""Fixtures: the real demo system on a node in its own thread, with its real agent on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import actors
import agent
from examples.demo_system import DemoHandles, build

TOKEN = "chaos-test-operator-token-0123456789"
READ_TOKEN = "chaos-test-read-token-9876543210"


class DemoHost:
    """A node in a thread running the demo tree (or another tree) with an agent."""

    def __init__(self, *, demo: bool = True, traffic: bool = False, seed: int = 7) -> None:
        self.node = actors.Node.start_in_thread(log_crashes=False)
        self.demo: DemoHandles | None = None
        if demo:
            self.demo = self.run_async(build(self.node, scale=1, seed=seed, traffic=traffic))
        self.agent = agent.start(self.node, "127.0.0.1:0", token=TOKEN, read_token=READ_TOKEN, sample_hz=10)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.agent.port}"

    def run(self, fn: Any) -> Any:
        return self.node.apply_threadsafe(fn)

    def run_async(self, coro: Any, timeout: float = 20.0) -> Any:
        return self.node.run_threadsafe(coro).result(timeout)

    def live(self) -> set[str]:
        return self.run(lambda: {str(p) for p in self.node.processes()})  # type: ignore[no-any-return]

    def whereis(self, name: str) -> str | None:
        pid = self.run(lambda: self.node.whereis(name))
        return str(pid) if pid is not None else None

    def stop(self) -> None:
        self.agent.stop()
        if self.demo is not None:
            self.run_async(self.demo.stop())
        self.node.stop_thread()


@pytest.fixture
def demo_host() -> Iterator[DemoHost]:
    before = set(threading.enumerate())
    h = DemoHost()
    yield h
    h.stop()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not leaked, f"threads leaked: {leaked}"

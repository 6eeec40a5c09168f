"""Test helpers: ``async def`` tests run on a fresh event loop each.

A test that leaves tasks running (a leaked process, say) fails: every test's
loop must be empty when it ends.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

import pytest


def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def run() -> None:
        await fn(**kwargs)
        current = asyncio.current_task()
        leaked = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if leaked:
            for t in leaked:
                t.cancel()
            raise AssertionError(f"test leaked {len(leaked)} task(s): {leaked[:3]}")

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(run())
        return True
    # a loop is already running in this thread (Playwright's sync API leaves
    # one behind): run the test on a fresh loop in a thread of its own
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=in_thread, name=f"test:{pyfuncitem.name}")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return True


async def wait_until(pred: Callable[[], Any], *, timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``pred`` on the loop (yielding each time) until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)

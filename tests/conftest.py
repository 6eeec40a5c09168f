"""Test helpers: ``async def`` tests run on a fresh event loop each.

A test that leaves tasks running (a leaked process, say) fails: every test's
loop must be empty when it ends.

The history database on both backends: ``history_where`` is parametrized over
``sqlite`` (a file in the test's tmp dir) and ``postgresql`` (a fresh database
on the session's own PostgreSQL cluster, see :mod:`tests.pgcluster`), so a test
taking it runs on both, and the SQLite path and the PostgreSQL path pass the
same tests.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pgcluster import PostgresCluster, running_cluster


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's own PostgreSQL server (skipped when PostgreSQL is missing; failed under CI=true)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ``--db`` value: an SQLite file, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "history.db")
    return str(request.getfixturevalue("postgres_url"))

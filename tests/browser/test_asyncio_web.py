"""An asyncio node in a real browser: ``observer demo --asyncio`` (a real
aiohttp service under its own traffic, with a flaky dependency) next to the
actors demo. The tree draws tasks and TaskGroups, a failing request arrives as
a crash report, a TaskGroup child's failure shows its siblings cancelled, and
cancelling a task from the inspector works and is audited."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import DemoServer, logged_in_page
from tests.observer import wait_for

pytest.importorskip("aiohttp")


@pytest.fixture(scope="module")
def shop_server(browser: Any) -> Iterator[DemoServer]:
    s = DemoServer("--allow-destructive-actions", "--asyncio")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser: Any, shop_server: DemoServer) -> Iterator[Any]:
    p = logged_in_page(browser, shop_server, height=2000)
    yield p
    errors = p.js_errors
    p.context.close()
    assert not errors, f"JavaScript errors: {errors}"


def api(page: Any, server: DemoServer, path: str) -> Any:
    resp = page.request.get(server.base + path)
    assert resp.ok, (path, resp.status, resp.text()[:300])
    return resp.json()


def test_the_shop_tree_draws_tasks_and_taskgroups(page: Any, shop_server: DemoServer) -> None:
    page.goto(f"{shop_server.base}/nodes/shop/tree")
    page.wait_for_function("() => window.observer?.view?.stats?.()?.items > 5", timeout=30000)
    page.wait_for_selector('#tree g[data-kind="taskgroup"]', timeout=30000)
    page.wait_for_selector('#tree g[data-kind="task"]')
    kinds = page.evaluate("() => [...document.querySelectorAll('#tree g[data-pid]')].map((g) => g.dataset.kind)")
    assert "loop" in kinds and kinds.count("task") >= 5


def test_a_failing_request_and_a_taskgroup_failure_show_in_the_crash_log(page: Any, shop_server: DemoServer) -> None:
    page.goto(f"{shop_server.base}/events?node=shop")
    page.check("#ev-crashes")
    row = '#ev-list li[data-kind="exit"]'
    page.wait_for_function(
        "(sel) => [...document.querySelectorAll(sel)].some((li) => li.innerText.includes('ExceptionGroup'))",
        arg=row,
        timeout=45000,
    )
    # a poison order kills one consumer: its TaskGroup cancels the two others
    page.goto(f"{shop_server.base}/events?node=shop&q=consumer")
    page.wait_for_function(
        """(sel) => {
          const rows = [...document.querySelectorAll(sel)].map((li) => li.innerText);
          const cancelled = rows.filter((t) => t.includes('cancelled')).length;
          return rows.some((t) => t.includes('poison order')) && cancelled >= 2;
        }""",
        arg=row,
        timeout=60000,
    )


def test_cancel_a_task_from_the_inspector_is_previewed_and_audited(page: Any, shop_server: DemoServer) -> None:
    rec = api(page, shop_server, "/api/nodes/shop/processes/cache-refresher")
    pid = str(rec["pid"])
    page.goto(f"{shop_server.base}/nodes/shop/processes/{urllib.parse.quote(pid, safe='')}")
    page.wait_for_selector("#act-cancel")
    assert "Shop.cache_refresher" in page.inner_text("#insp")
    page.click("#act-cancel")
    dialog = page.wait_for_selector("dialog#confirm[open] .preview")
    assert "TaskGroup" in dialog.inner_text()
    page.click("#confirm-ok")
    page.wait_for_selector(".exited", timeout=10000)

    def done() -> Any:  # the audit row is written before the command, its result after the reply
        audit = api(page, shop_server, "/api/audit?limit=50")["audit"]
        rows = [r for r in audit if r["action"] == "cancel" and r["target"] == pid and r["done_time"]]
        return rows

    rows = wait_for(done, timeout=10, what="the cancel's audited result")
    assert rows[0]["ok"] == 1 and rows[0]["node"] == "shop"


def test_the_overview_shows_both_kinds_of_node(page: Any, shop_server: DemoServer) -> None:
    page.goto(f"{shop_server.base}/")
    page.wait_for_selector('.nodecard[data-node="shop"][data-kind="asyncio"]', timeout=30000)
    page.wait_for_selector('.nodecard[data-node="demo"][data-kind="actors"]')
    card = page.inner_text('.nodecard[data-node="shop"]').lower()
    assert "asyncio" in card and "tasks" in card and "supervisors" not in card

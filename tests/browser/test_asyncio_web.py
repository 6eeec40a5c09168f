"""An asyncio node in a real browser: ``observer demo --asyncio`` (a real
aiohttp service under its own traffic, with a flaky dependency) next to the
actors demo. The tree draws tasks, TaskGroups and timeout scopes (with their
deadline in the inspector), a failing request arrives as a crash report, a
TaskGroup child's failure shows its siblings cancelled (also when it all ends
within the agent's lazy delay), and cancelling a task from the inspector works
and is audited."""

from __future__ import annotations

import time
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


def test_a_chaos_experiment_cancels_tasks_of_the_asyncio_node(page: Any, shop_server: DemoServer) -> None:
    page.goto(f"{shop_server.base}/chaos")
    page.wait_for_selector("#chaos-form:not(.hidden)")
    page.select_option("#chaos-node", "shop")
    page.fill('input[name="names"]', "consumer-*")
    page.fill('input[name="interval_ms"]', "100")
    # the consumers die on poison orders and come back 0.5 s later: an attempt can find
    # none (skipped, no candidate), so six attempts, of which at least one cancels
    page.fill('input[name="kills"]', "6")
    page.fill('input[name="settle_s"]', "1")
    dialogs: list[str] = []

    def accept(d: Any) -> None:
        dialogs.append(d.message)
        d.accept()

    page.on("dialog", accept)
    page.click("#chaos-start")
    page.wait_for_function(
        "() => document.getElementById('chaos-status').innerText.includes('hypothesis')", timeout=30000
    )
    assert dialogs and "cancel tasks on shop" in dialogs[0], dialogs
    assert "hypothesis held" in page.inner_text("#chaos-status")
    exp = wait_for(lambda: api(page, shop_server, "/api/chaos/experiments?node=shop")["history"], what="saved")[0]
    j = wait_for(lambda: (x := api(page, shop_server, f"/api/chaos/experiments/{exp['id']}"))["ended"] and x)
    assert j["status"] == "completed" and any("do not apply" in n for n in j["notes"])
    kills, skipped = j["kills"], j["skipped"]
    assert kills and all(k["command"] == "cancel" for k in kills), j
    assert all(k["name"].startswith("consumer-") for k in kills)
    assert len(kills) + sum(skipped.values()) == 6 and {k for k, n in skipped.items() if n} <= {
        "no_candidate",
        "gone",
    }, j


def test_a_timeout_scope_is_drawn_and_its_deadline_shown(page: Any, shop_server: DemoServer) -> None:
    # the reporter builds its parts (8-20 s) in a TaskGroup inside asyncio.timeout(30);
    # the orders' short timeouts come and go too fast to click
    reporter = str(api(page, shop_server, "/api/nodes/shop/processes/reporter")["pid"])
    q = urllib.parse.quote(reporter, safe="")

    def reporter_timeout() -> Any:
        rows = api(page, shop_server, f"/api/nodes/shop/processes?supervisor={q}&limit=50")["rows"]
        young = [r for r in rows if r.get("kind") == "timeout" and time.time() - r["started_at"] < 4]
        return young and young[0]["pid"]  # at least 4 s left: its parts take 8 s or more

    tmo = str(wait_for(reporter_timeout, timeout=30, what="the reporter's timeout"))
    page.goto(f"{shop_server.base}/nodes/shop/tree")
    page.wait_for_selector(f'#tree g[data-kind="timeout"][data-pid="{tmo}"]', timeout=30000)
    pid = urllib.parse.quote(tmo, safe="")
    got = api(page, shop_server, f"/api/nodes/shop/processes/{pid}")
    assert got["process"]["kind"] == "timeout" and got["inspect"]["timeout_state"] in ("active", "expiring")
    assert got["inspect"]["task"] == got["process"]["supervisor"]
    page.goto(f"{shop_server.base}/nodes/shop/processes/{pid}")
    page.wait_for_function("() => document.getElementById('insp')?.innerText.includes('deadline')", timeout=15000)
    text = page.inner_text("#insp")
    assert "s left" in text or "due" in text, text


def test_a_request_taskgroup_failing_at_once_shows_its_sibling_cancelled(page: Any, shop_server: DemoServer) -> None:
    # an order's TaskGroup: the stock fetch fails within milliseconds on a 503 and
    # the pricing step is cancelled, all within the agent's lazy delay (100 ms)
    def cancelled_price() -> Any:
        evs = api(page, shop_server, "/api/events?node=shop&kinds=exit&q=Shop.price&limit=200")["events"]
        return [e for e in evs if e.get("label") == "Shop.price" and e.get("reason") == "cancelled"]

    ev = wait_for(cancelled_price, timeout=60, what="a pricing step cancelled by its failing sibling")[0]
    page.goto(f"{shop_server.base}/events?node=shop&q={urllib.parse.quote(str(ev['pid']))}")
    page.wait_for_function(
        """(pid) => [...document.querySelectorAll('#ev-list li[data-kind="exit"]')]
              .some((li) => li.dataset.pid === pid && li.innerText.includes('cancelled'))""",
        arg=str(ev["pid"]),
        timeout=30000,
    )

"""Crash reports in a real browser: the inspector switches the flight recorder
for a subtree, a crash's report reads as a page (traceback, message, state,
flight recorder, ancestry), links to the tree with its path, and the crashes
page groups it."""

from __future__ import annotations

import json
from typing import Any

from tests.browser.conftest import DemoServer


def _csrf(page: Any) -> str:
    return str(page.evaluate("JSON.parse(document.getElementById('config').textContent).csrf"))


def test_a_crash_report_reads_as_a_page_linked_from_inspector_events_and_tree(
    rw_page: Any, rw_server: DemoServer
) -> None:
    page, base = rw_page, rw_server.base
    page.goto(f"{base}/nodes/demo/processes/payments_sup")
    page.wait_for_selector("#fr-on")
    page.check("#fr-subtree")
    page.click("#fr-on")
    page.wait_for_function("() => /on \\(last 20, subtree\\)/.test(document.getElementById('fr-state')?.textContent)")
    victim = page.request.get(f"{base}/api/nodes/demo/processes/payments").json()["pid"]
    resp = page.request.post(
        f"{base}/api/nodes/demo/processes/payments/kill",
        data=json.dumps({"reason": "boom"}),
        headers={"X-CSRF-Token": _csrf(page), "Content-Type": "application/json"},
    )
    assert resp.ok, resp.text()
    # the events page links the exit to its report
    page.goto(f"{base}/events")
    link = page.locator(f'#ev-list li[data-pid="{victim}"] a.crash-link').first
    link.wait_for(timeout=20_000)
    link.click()
    page.wait_for_selector("#crash h1")
    assert "payments" in page.inner_text("#crash h1")
    assert "killed by a signal" in page.inner_text("#crash")
    page.wait_for_selector("#flight")  # the recorder was on for the subtree
    ancestry = page.inner_text(".ancestry")
    assert "demo_sup" in ancestry and "payments_sup" in ancestry and victim in ancestry
    # the tree, with that path highlighted
    page.click("#crash-tree")
    page.wait_for_url("**/nodes/demo/tree?path=*")
    page.wait_for_selector("#tree svg.tree g[data-pid]")
    # the crashes page groups it
    page.goto(f"{base}/crashes")
    page.wait_for_selector("#cr-rows tr[data-group]")
    assert "exit boom of PaymentWorker" in page.inner_text("#cr-rows")
    # the inspector of the restarted process shows that latest crash
    page.goto(f"{base}/nodes/demo/processes/payments")
    page.wait_for_selector("#insp-crash-link")
    assert "/crash/" in (page.get_attribute("#insp-crash-link", "href") or "")
    # off again for the subtree
    page.goto(f"{base}/nodes/demo/processes/payments_sup")
    page.wait_for_selector("#fr-off")
    page.check("#fr-subtree")
    page.click("#fr-off")
    page.wait_for_function("() => document.getElementById('fr-state')?.textContent === 'off'")

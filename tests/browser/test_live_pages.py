"""Pages that start from history and follow pushes, in a real browser against
``observer demo``: a crash appears on the Crashes page and an audit row on the
Audit page without a reload, and the overview's "Recent crashes and restarts"
is filled from the stored events as soon as it loads."""

from __future__ import annotations

import json
import secrets
import urllib.parse
from typing import Any

from examples.demo_system import PAYMENTS, room_name
from tests.browser.conftest import DemoServer
from tests.observer import wait_for

MARK = "() => { window.__noReload = true; }"
NOT_RELOADED = "() => window.__noReload === true"
COUNT_TIMERS = """
window.__intervals = [];
const setInterval0 = window.setInterval;
window.setInterval = (fn, ms, ...args) => { window.__intervals.push(ms); return setInterval0(fn, ms, ...args); };
"""
"""Runs before the page's scripts: every repeating timer a page sets is counted (a polling page sets one)."""


def _csrf(page: Any) -> str:
    return str(page.evaluate("JSON.parse(document.getElementById('config').textContent).csrf"))


def _kill(page: Any, server: DemoServer, name: str, reason: str) -> Any:
    """POST a kill from the page's session (as a second browser tab would)."""
    return page.request.post(
        f"{server.base}/api/nodes/demo/processes/{urllib.parse.quote(name, safe='')}/kill",
        data=json.dumps({"reason": reason}),
        headers={"X-CSRF-Token": _csrf(page), "Content-Type": "application/json"},
    )


def _live(page: Any) -> None:
    """Wait for the page's Socket.IO connection (its feed subscriptions go out on connect)."""
    page.wait_for_function("() => document.getElementById('conn').textContent === 'live'")


def test_a_crash_appears_on_the_crashes_page_without_reload(rw_page: Any, rw_server: DemoServer) -> None:
    page = rw_page
    page.add_init_script(COUNT_TIMERS)
    page.goto(f"{rw_server.base}/crashes")
    page.wait_for_selector("#cr-rows tr[data-group], #cr-rows td.muted")
    _live(page)
    page.evaluate(MARK)
    reason = f"pushed-{secrets.token_hex(3)}"
    victim = page.request.get(f"{rw_server.base}/api/nodes/demo/processes/{PAYMENTS}").json()["pid"]
    assert reason not in page.inner_text("#cr-rows")
    resp = _kill(page, rw_server, PAYMENTS, reason)
    assert resp.ok, resp.text()
    row = page.locator("#cr-rows tr[data-group]", has_text=f"exit {reason} of")
    row.wait_for(timeout=15_000)
    assert page.evaluate(NOT_RELOADED), "the page was reloaded"
    assert victim in row.inner_text() and row.locator("td.num").inner_text() == "1"
    assert row.get_attribute("data-signature") == f"exit {reason} of PaymentWorker"
    assert page.evaluate("() => window.__intervals") == [], "the page polls"


def test_an_audit_row_appears_on_the_audit_page_without_reload(ro_page: Any, ro_server: DemoServer) -> None:
    page = ro_page
    page.add_init_script(COUNT_TIMERS)
    page.goto(f"{ro_server.base}/audit")
    page.wait_for_selector("#audit-table tbody tr")
    _live(page)
    page.evaluate(MARK)
    before = page.locator('#audit-table tbody tr[data-action="kill"]').count()
    resp = _kill(page, ro_server, room_name("lobby"), "forged")  # destructive actions are off: refused, audited
    assert resp.status == 403 and resp.json()["error"] == "destructive_actions_disabled"
    page.wait_for_function(
        "(n) => document.querySelectorAll('#audit-table tbody tr[data-action=\"kill\"]').length > n", arg=before
    )
    assert page.evaluate(NOT_RELOADED), "the page was reloaded"
    first = page.locator("#audit-table tbody tr").first
    assert first.get_attribute("data-action") == "kill"
    # its outcome follows once the server writes the result (pushed too)
    page.wait_for_function(
        "() => document.querySelector('#audit-table tbody tr').innerText.includes('refused')", timeout=10_000
    )
    assert "refused / failed" in first.inner_text() and first.get_attribute("data-ok") == "0"
    assert page.evaluate("() => window.__intervals") == [], "the page polls"


def test_the_overviews_recent_panel_is_filled_from_history_on_load(rw_page: Any, rw_server: DemoServer) -> None:
    page = rw_page
    page.goto(f"{rw_server.base}/events")  # any page, for the session and the CSRF token
    name = room_name("random")
    old = page.request.get(f"{rw_server.base}/api/nodes/demo/processes/{urllib.parse.quote(name)}").json()["pid"]
    assert _kill(page, rw_server, name, "kill").ok

    def stored() -> bool:
        q = urllib.parse.urlencode({"node": "demo", "kinds": "restart", "q": old, "limit": 5})
        events = page.request.get(f"{rw_server.base}/api/events?{q}").json()["events"]
        return any(e.get("old_pid") == old for e in events)

    wait_for(stored, timeout=15, what="the restart stored")
    # a fresh overview: the restart happened before it loaded, so only the history can show it
    page.goto(f"{rw_server.base}/")
    page.wait_for_function(
        "(old) => [...document.querySelectorAll('#feed li')].some((li) => li.innerText.includes(old))",
        arg=old,
        timeout=10_000,
    )
    assert "Nothing yet" not in page.inner_text("#feed")
    assert page.locator("#feed li .pill.k-restart").count() >= 1


def test_the_inspector_shows_its_processs_crash_without_reload(rw_page: Any, rw_server: DemoServer) -> None:
    page = rw_page
    name = room_name("support")
    pid = page.request.get(f"{rw_server.base}/api/nodes/demo/processes/{urllib.parse.quote(name)}").json()["pid"]
    page.goto(f"{rw_server.base}/nodes/demo/processes/{urllib.parse.quote(pid, safe='')}")
    page.wait_for_selector("#insp-crashes")
    _live(page)
    page.evaluate(MARK)
    reason = f"inspected-{secrets.token_hex(3)}"
    assert _kill(page, rw_server, pid, reason).ok
    # pushed: this process's report is stored (the slot may hold older reports already, so wait for this one)
    page.wait_for_function(
        "(reason) => (document.querySelector('#insp-crashes')?.innerText || '').includes(reason)",
        arg=reason,
        timeout=15_000,
    )
    page.wait_for_selector("#insp-crash-link")
    assert page.evaluate(NOT_RELOADED), "the page was reloaded"
    assert reason in page.inner_text("#insp-crashes") and pid in page.inner_text("#insp-crashes")

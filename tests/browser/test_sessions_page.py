"""Login sessions on the Audit page, in a real browser: one browser ends
another's session, which is then logged out everywhere (its API calls and its
live connection refused), and the revocation is in the audit log."""

from __future__ import annotations

from typing import Any

from tests.browser.conftest import DemoServer, logged_in_page


def test_a_session_ended_from_the_audit_page_is_logged_out(browser: Any, rw_server: DemoServer) -> None:
    victim = logged_in_page(browser, rw_server)
    admin = logged_in_page(browser, rw_server)
    try:
        victim.goto(f"{rw_server.base}/nodes/demo/tree")
        mine = victim.request.get(f"{rw_server.base}/api/sessions").json()
        sid = next(s["id"] for s in mine["sessions"] if s["current"])
        admin.goto(f"{rw_server.base}/audit")
        row = admin.locator(f'#sessions-table tr[data-session="{sid}"]')
        row.wait_for()
        assert row.get_attribute("data-status") == "live"
        row.locator(f'button[data-revoke="{sid}"]').click()
        admin.wait_for_selector(f'#sessions-table tr[data-session="{sid}"][data-status="revoked"]')
        admin.wait_for_selector('#audit-table tr[data-action="session_revoke"][data-ok="1"]')
        assert victim.request.get(f"{rw_server.base}/api/overview").status == 401
        victim.reload()
        victim.wait_for_url("**/login**")
        assert admin.request.get(f"{rw_server.base}/api/overview").ok  # the other session is still served
    finally:
        victim.context.close()
        admin.context.close()

"""Server-side login sessions (logout revokes a stolen cookie; idle and
absolute expiry; an operator logs out every session of a token) and the audit
log's redaction, against the real app, node, agent and history file."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient

from examples.demo_system import PAYMENTS
from observer.live import NAMESPACE
from tests.observer import wait_for
from tests.observer.test_app import Web, csrf_headers, make_web, web

__all__ = ["make_web", "web"]  # fixtures used here


def _stolen(c: FlaskClient, web: Web) -> FlaskClient:
    """Another client holding a copy of ``c``'s session cookie (a stolen cookie)."""
    thief = web.app.test_client()
    name = web.app.config["SESSION_COOKIE_NAME"]
    cookie = c.get_cookie(name, domain="127.0.0.1")
    assert cookie is not None
    thief.set_cookie(name, cookie.value, domain=cookie.domain)
    return thief


def test_logout_revokes_the_session_and_every_copy_of_its_cookie(web: Web) -> None:
    c = web.client()
    thief = _stolen(c, web)
    assert thief.get("/api/overview").status_code == 200
    assert c.post("/logout", headers=csrf_headers(c)).status_code == 200
    assert thief.get("/api/overview").status_code == 401
    assert not web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=thief).is_connected(NAMESPACE)
    rows = web.client().get("/api/sessions").get_json()["sessions"]
    assert [r["status"] for r in rows].count("revoked") == 1


def test_a_revoked_sessions_live_connection_is_closed(web: Web) -> None:
    c = web.client()
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=c)
    assert sio.is_connected(NAMESPACE)
    op = web.client()
    mine = next(r for r in c.get("/api/sessions").get_json()["sessions"] if r["current"])
    r = op.post(f"/api/sessions/{mine['id']}/revoke", headers=csrf_headers(op))
    assert r.status_code == 200 and r.get_json()["ended"] == 1
    assert not sio.is_connected(NAMESPACE)
    assert c.get("/api/overview").status_code == 401


def test_idle_and_absolute_expiry(web: Web) -> None:
    sessions = web.state.sessions
    c = web.client()
    assert c.get("/api/overview").status_code == 200
    sessions.idle = 0.2  # no request for 0.2 s: the session ends
    wait_for(lambda: c.get("/api/overview").status_code == 401 or None, what="idle expiry")
    sessions.idle, sessions.max_age = 3600.0, 0.3
    busy = web.client()  # requests without a pause; its lifetime (0.3 s from login) still ends it
    wait_for(lambda: busy.get("/api/overview").status_code == 401 or None, what="absolute expiry")
    rows = web.client().get("/api/sessions").get_json()["sessions"]
    assert [r["status"] for r in rows].count("expired") == 2


def test_an_operator_logs_out_every_session_of_a_token_and_a_reader_cannot(make_web: Callable[..., Web]) -> None:
    web = make_web()
    a, b, op = web.client(), web.client(), web.client()
    listed = op.get("/api/sessions").get_json()
    assert listed["operator"] and len([r for r in listed["sessions"] if r["status"] == "live"]) == 3
    victim = next(r for r in a.get("/api/sessions").get_json()["sessions"] if r["current"])
    r = op.post(f"/api/sessions/{victim['id']}/revoke-token", headers=csrf_headers(op))
    assert r.status_code == 200 and r.get_json()["ended"] == 3  # one token: all three, the operator's too
    for cl in (a, b, op):
        assert cl.get("/api/overview").status_code == 401
    web.store.flush()
    actions = [(x["action"], x["ok"]) for x in web.store.audits()]
    assert ("session_revoke_token", 1) in actions


def test_a_password_sent_to_a_process_is_masked_in_the_audit_log_and_its_exports(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    pid = web.pid(PAYMENTS)
    msg: dict[str, Any] = {"user": "alice", "password": "hunter2-secret", "nested": {"api_key": "k-123456"}}
    r = c.post(f"/api/nodes/demo/processes/{pid}/send", json={"message": msg}, headers=csrf_headers(c))
    assert r.status_code == 200, r.get_json()
    web.store.flush()
    row = next(x for x in web.store.audits() if x["action"] == "send")
    text = json.dumps(row)
    assert "hunter2-secret" not in text and "k-123456" not in text and "alice" in text
    for fmt in ("csv", "json"):
        export = c.get(f"/api/audit/export?format={fmt}").get_data(as_text=True)
        assert "hunter2-secret" not in export and "k-123456" not in export


def test_the_login_link_is_exchanged_once_and_the_form_still_works(web: Web) -> None:
    link = f"/login?token={web.config.login_token}"
    first = web.app.test_client()
    assert first.get(link).status_code == 302 and first.get("/api/overview").status_code == 200
    again = web.app.test_client()  # the same URL from the browser's history, a proxy log, a shared screen
    resp = again.get(link)
    assert resp.status_code == 403 and "already used" in resp.get_data(as_text=True)
    assert again.get("/api/overview").status_code == 401
    form = web.app.test_client()  # typed into the form, the token still logs in
    assert form.post("/login", data={"token": web.config.login_token}).status_code == 302
    assert form.get("/api/overview").status_code == 200
    web.store.flush()
    rows = [r for r in web.store.audits() if r["action"] == "login"]
    assert rows and rows[0]["ok"] == 0 and rows[0]["result"]["error"] == "link_used"

"""Login, cookie flags, Origin/Host checks (HTTP and Socket.IO) and CSRF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from examples.demo_system import PAYMENTS
from observer.live import NAMESPACE
from observer.security import SecurityPolicy
from tests.observer.test_app import ORIGIN, Web, csrf_headers, make_web, web

__all__ = ["make_web", "web"]  # fixtures used here


def test_login_is_required_for_pages_api_and_socketio(web: Web) -> None:
    c = web.client(login=False)
    api = c.get("/api/overview")
    assert api.status_code == 401 and api.get_json()["error"] == "login_required"
    page = c.get("/nodes/demo/tree")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    assert c.get("/vendor/plotly.min.js").status_code == 302
    assert c.get("/login").status_code == 200  # the form
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=c)
    assert not sio.is_connected(NAMESPACE)


def test_wrong_login_token_is_refused(web: Web) -> None:
    c = web.client(login=False)
    assert c.get("/login?token=nope").status_code == 403
    assert c.post("/login", data={"token": "nope"}).status_code == 403
    assert c.get("/api/overview").status_code == 401


def test_login_sets_a_strict_httponly_session_cookie_and_post_login_works(web: Web) -> None:
    c = web.client(login=False)
    resp = c.get(f"/login?token={web.config.login_token}&next=//evil.example/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "login-token-for-tests" not in cookie
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert c.get("/api/overview").status_code == 200
    c2 = web.client(login=False)
    assert c2.post("/login", data={"token": web.config.login_token}).status_code == 302
    assert c2.get("/api/overview").status_code == 200


def test_wrong_origin_or_host_is_refused_on_http(web: Web) -> None:
    c = web.client()
    assert c.get("/api/overview", headers={"Origin": ORIGIN}).status_code == 200
    evil = c.get("/api/overview", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.get_json()["error"] == "origin"
    other_port = c.get("/api/overview", headers={"Origin": "http://127.0.0.1:1"})
    assert other_port.status_code == 403
    rebinding = c.get("/api/overview", base_url="http://evil.example:5000")
    assert rebinding.status_code == 403 and rebinding.get_json()["error"] == "host"
    assert c.get("/api/overview", base_url="http://localhost:5000").status_code == 401  # host fine; no cookie there


def test_wrong_origin_is_refused_on_socketio(web: Web) -> None:
    c = web.client()
    bad = web.socketio.test_client(
        web.app, namespace=NAMESPACE, flask_test_client=c, headers={"Origin": "http://evil.example"}
    )
    assert not bad.is_connected(NAMESPACE)
    good = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=c, headers={"Origin": ORIGIN})
    assert good.is_connected(NAMESPACE)
    good.disconnect(namespace=NAMESPACE)


def test_state_changing_requests_need_the_csrf_header(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    url = f"/api/nodes/demo/processes/{web.pid(PAYMENTS)}/suspend"
    missing = c.post(url, json={})
    assert missing.status_code == 403 and missing.get_json()["error"] == "csrf"
    wrong = c.post(url, json={}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403 and wrong.get_json()["error"] == "csrf"
    other = web.client()  # another session's token does not do either
    assert c.post(url, json={}, headers=csrf_headers(other)).status_code == 403
    assert c.post("/logout").status_code == 403
    web.store.flush()
    # refused before anything was attempted; audited, the repeats coalesced into one row per kind
    rows = web.store.audits()
    assert [(r["action"], r["ok"]) for r in rows] == [("csrf", 0)], rows
    assert c.post(url, json={}, headers=csrf_headers(c)).status_code == 200


def test_policy_refuses_wildcard_origins(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SecurityPolicy.for_bind("t", "127.0.0.1", 1, extra_origins=["*"])
    p = SecurityPolicy.for_bind("t", "127.0.0.1", 8000, extra_origins=["https://obs.example.com"])
    assert "http://localhost:8000" in p.origins and "https://obs.example.com" in p.origins
    assert "obs.example.com" in p.hosts and "127.0.0.1:8000" in p.hosts

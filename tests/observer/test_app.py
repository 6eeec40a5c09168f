"""The web app in-process: Flask test client against a real node + agent + AttachManager.

:class:`Web` (used by the other ``test_*`` web modules too) runs the demo
tree (no traffic, so nothing changes on its own) on a node in a thread with
its agent, attaches a real :class:`AttachManager`, and builds the app.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_socketio import SocketIO

from examples.demo_system import PAYMENTS, PAYMENTS_SUP, build
from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from tests.agent.conftest import OP_TOKEN, READ_TOKEN, Host
from tests.observer import wait_for

PORT = 5000
ORIGIN = f"http://127.0.0.1:{PORT}"


class Web:
    """A node with the demo tree, its agent, and the observer app attached to it."""

    def __init__(self, tmp: Path, *, allow_destructive: bool = False, db: str | None = None) -> None:
        self.host = Host()
        self.demo = self.host.run_async(build(self.host.node, seed=7, traffic=False))
        self.store = HistoryStore(db or str(tmp / "history.sqlite3"), batch_interval=0.02)
        self.manager = AttachManager(self.store, change_interval=0.02)
        self.config = ObserverConfig(
            host="127.0.0.1",
            port=PORT,
            login_token="login-token-for-tests",
            allow_destructive_actions=allow_destructive,
            attach=(
                AttachSpec("demo", f"127.0.0.1:{self.host.agent.port}", OP_TOKEN if allow_destructive else READ_TOKEN),
            ),
            batch_interval=0.1,
            manager=self.manager,
            store=self.store,
        )
        self.app: Flask
        self.socketio: SocketIO
        self.app, self.socketio = create_app(self.config)
        self.app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"  # the test client's Host
        self.state = self.app.extensions["observer"]
        self.model = self.state.model("demo")
        wait_for(lambda: self.model.status == "up" and PAYMENTS in self.model.names(), what="attached")

    def client(self, *, login: bool = True) -> FlaskClient:
        c = self.app.test_client()
        if login:
            # the login form (a token in a URL is exchanged once: observer.sessions)
            assert c.post("/login", data={"token": self.config.login_token}).status_code == 302
        return c

    def pid(self, name: str) -> str:
        """The pid of the process registered as ``name`` (also after a restart)."""
        found = self.find(name)
        assert found is not None, name
        return found

    def find(self, name: str) -> str | None:
        return next((str(h["pid"]) for h in self.model.search(name) if h["name"] == name), None)

    def close(self) -> None:
        self.state.close()
        self.manager.close()
        self.store.close()
        self.host.run_async(self.demo.stop())
        self.host.stop()


def page_config(client: FlaskClient, path: str = "/") -> dict[str, Any]:
    html = client.get(path).get_data(as_text=True)
    m = re.search(r'<script type="application/json" id="config">(.*?)</script>', html, re.S)
    assert m, html[:500]
    cfg: dict[str, Any] = json.loads(m.group(1))
    return cfg


def csrf_headers(client: FlaskClient) -> dict[str, str]:
    return {"X-CSRF-Token": str(page_config(client)["csrf"]), "Origin": ORIGIN}


@pytest.fixture
def make_web(tmp_path: Path) -> Iterator[Callable[..., Web]]:
    made: list[Web] = []

    def make(**kw: Any) -> Web:
        w = Web(tmp_path, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.fixture
def web(make_web: Callable[..., Web]) -> Web:
    return make_web()


def test_every_json_twin_answers_with_the_demo_tree(web: Web) -> None:
    c = web.client()
    ov = c.get("/api/overview").get_json()
    assert [n["name"] for n in ov["nodes"]] == ["demo"] and ov["nodes"][0]["status"] == "up"
    assert ov["nodes"][0]["process_count"] > 10 and "demo" in ov["series"]
    tree = c.get("/api/nodes/demo/tree?group_threshold=5&expanded=x,y").get_json()
    assert tree["tree"]["id"] == "node" and tree["layout"]["nodes"]
    found = c.get("/api/nodes/demo/search?q=payments").get_json()["matches"]
    assert any(m["name"] == PAYMENTS and len(m["path"]) >= 2 for m in found)
    payments = web.pid(PAYMENTS)
    assert c.get(f"/api/nodes/demo/links/{payments}").get_json()["links"]
    rows = c.get("/api/nodes/demo/processes?sort=mailbox&desc=1&limit=5&offset=0").get_json()
    assert rows["total"] > 10 and len(rows["rows"]) == 5
    insp = c.get(f"/api/nodes/demo/processes/{payments}").get_json()
    assert insp["process"]["pid"] == payments and insp["inspect_error"] is None
    assert insp["inspect"]["state"] is not None and "restart_history" in insp
    by_bare = c.get(f"/api/nodes/demo/processes/{payments.strip('<>')}")  # 0.9.0 and names work too
    assert by_bare.status_code == 200 and c.get(f"/api/nodes/demo/processes/{PAYMENTS}").status_code == 200
    preview = c.get(f"/api/nodes/demo/processes/{payments}/kill_preview?reason=kill").get_json()
    assert preview["target_dies"] and payments in preview["down"]
    web.store.flush()
    events = c.get("/api/events?node=demo&kinds=snapshot,status&limit=10").get_json()
    assert events["events"] and {e["kind"] for e in events["events"]} <= {"snapshot", "status"} and "crashes" in events
    assert c.get("/api/nodes/demo/timeline").get_json()["start"] is not None
    at = c.get(f"/api/nodes/demo/tree_at?t={time.time()}").get_json()
    assert any(p["name"] == PAYMENTS for p in at["procs"]) and at["tree"]["children"]
    assert c.get("/api/audit?limit=5").get_json() == {"audit": []}
    assert c.get("/api/nodes").get_json()["nodes"][0]["status"] == "up"


def test_pages_render_with_their_config(web: Web) -> None:
    c = web.client()
    pid = web.pid(PAYMENTS)
    for path in ("/", "/events", "/nodes/demo/tree", "/nodes/demo/processes", f"/nodes/demo/processes/{pid}"):
        resp = c.get(path)
        assert resp.status_code == 200, path
        cfg = page_config(c, path)
        assert cfg["csrf"] and cfg["allow_destructive"] is False and cfg["nodes"] == ["demo"]
    assert page_config(c, "/nodes/demo/tree")["node"] == "demo"
    assert c.get("/nodes/nope/tree").status_code == 404


def test_unknown_node_pid_and_action_get_4xx_json(web: Web) -> None:
    c = web.client()
    for path in (
        "/api/nodes/nope/tree",
        "/api/nodes/nope/processes",
        "/api/nodes/demo/processes/<0.99999.0>",
        "/api/nodes/demo/links/<0.99999.0>",
        "/api/nodes/demo/processes/<0.99999.0>/kill_preview",
        "/api/nodes/nope/timeline",
        f"/api/nodes/demo/tree_at?t={time.time() - 86400}",
        "/api/nothing/here",
    ):
        resp = c.get(path)
        assert resp.status_code == 404, path
        assert resp.get_json()["ok"] is False, path
    h = csrf_headers(c)
    assert c.post("/api/nodes/demo/processes/<0.99999.0>/kill", json={}, headers=h).status_code == 404
    assert c.post(f"/api/nodes/demo/processes/{web.pid(PAYMENTS)}/explode", json={}, headers=h).status_code == 404


def test_bad_query_values_get_400_json(web: Web) -> None:
    c = web.client()
    for path in (
        "/api/nodes/demo/processes?sort=bogus",
        "/api/nodes/demo/processes?limit=abc",
        "/api/nodes/demo/processes?offset=-1",
        "/api/nodes/demo/tree?group_threshold=0",
        "/api/nodes/demo/tree_at",
        "/api/nodes/demo/tree_at?t=nan",
        "/api/events?since=yesterday",
        "/api/audit?limit=0",
    ):
        resp = c.get(path)
        assert resp.status_code == 400, path
        body = resp.get_json()
        assert body["ok"] is False and body["error"] == "bad_query", (path, body)


def test_malformed_action_payloads_get_400_json(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    h = csrf_headers(c)
    url = f"/api/nodes/demo/processes/{web.pid(PAYMENTS)}"
    bad = c.post(f"{url}/kill", data="{not json", headers=h | {"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_json"
    assert c.post(f"{url}/kill", json=[1, 2], headers=h).status_code == 400
    assert c.post(f"{url}/kill", json={"reason": 42}, headers=h).get_json()["error"] == "bad_args"
    assert c.post(f"{url}/send", json={}, headers=h).get_json()["error"] == "bad_args"
    assert web.model.status == "up" and PAYMENTS in web.model.names()


def test_vendor_scripts_are_served_from_packages(web: Web) -> None:
    c = web.client()
    plotly = c.get("/vendor/plotly.min.js")
    assert plotly.status_code == 200 and plotly.mimetype == "text/javascript" and len(plotly.data) > 100_000
    sio = c.get("/vendor/socket.io.min.js")
    assert sio.status_code in (200, 404) and sio.mimetype == "text/javascript"
    if sio.status_code == 404:
        assert b"npm ci" in sio.data


def test_kill_with_destructive_actions_off_is_refused_and_audited(web: Web) -> None:
    c = web.client()
    pid = web.pid(PAYMENTS)
    resp = c.post(f"/api/nodes/demo/processes/{pid}/kill", json={"reason": "kill"}, headers=csrf_headers(c))
    assert resp.status_code == 403 and resp.get_json()["error"] == "destructive_actions_disabled"
    assert web.pid(PAYMENTS) == pid and pid in web.model
    web.store.flush()
    (row,) = c.get("/api/audit").get_json()["audit"]
    assert row["action"] == "kill" and row["target"] == pid and row["node"] == "demo"
    assert row["ok"] == 0 and row["result"] == {"error": "destructive_actions_disabled"}
    assert row["who"] and row["from_addr"] == "127.0.0.1"


def test_kill_with_destructive_actions_on_kills_restarts_and_audits(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    assert page_config(c)["allow_destructive"] is True
    pid = web.pid(PAYMENTS)
    resp = c.post(f"/api/nodes/demo/processes/{pid}/kill", json={"reason": "kill"}, headers=csrf_headers(c))
    assert resp.status_code == 200 and resp.get_json() == {"ok": True, "result": {"pid": pid, "reason": "kill"}}
    new = wait_for(lambda: (p := web.find(PAYMENTS)) != pid and p, what="payments restarted")
    assert pid not in web.model
    hist = c.get(f"/api/nodes/demo/processes/{new}").get_json()["restart_history"]
    assert hist and hist[-1]["new_pid"] == new and hist[-1]["restarts"] >= 1
    assert c.get(f"/api/nodes/demo/processes/{new}").get_json()["process"]["supervisor"] == web.pid(PAYMENTS_SUP)
    web.store.flush()
    (row,) = c.get("/api/audit").get_json()["audit"]
    assert row["action"] == "kill" and row["target"] == pid and row["ok"] == 1
    assert row["result"] == {"pid": pid, "reason": "kill"} and row["done_time"] >= row["time"]
    gone = c.post(f"/api/nodes/demo/processes/{new}/suspend", json={}, headers=csrf_headers(c))
    assert gone.status_code == 200
    assert c.post(f"/api/nodes/demo/processes/{new}/resume", json={}, headers=csrf_headers(c)).status_code == 200
    sent = c.post(f"/api/nodes/demo/processes/{new}/send", json={"message": {"hi": 1}}, headers=csrf_headers(c))
    assert sent.get_json() == {"ok": True, "result": {"sent": True}}


def test_every_area_answers_errors_in_one_json_shape(web: Web) -> None:
    def boom() -> Any:
        raise ZeroDivisionError("a bug in a route")

    web.app.add_url_rule("/api/test/boom", view_func=boom)  # a route with a bug: the one handler's 500
    c = web.client()
    h = csrf_headers(c)
    cases = [
        (c.get("/api/nodes/nope/tree"), 404, "unknown_node"),  # nodes
        (c.get("/api/events?limit=0"), 400, "bad_query"),  # history
        (c.get("/api/crashes/424242"), 404, "unknown_crash"),  # crashes
        (c.get("/crash/find?node=demo", headers={"Accept": "application/json"}), 400, "bad_query"),
        (c.get("/api/audit/export?format=xml"), 400, "bad_query"),  # audit
        (c.get("/api/chaos/experiments/nope"), 404, "unknown_experiment"),  # chaos
        (c.get("/api/chaos/experiments?limit=x"), 400, "bad_query"),
        (c.delete("/api/nodes/nope", headers=h), 404, "unknown_node"),  # cluster
        (c.post("/api/nodes", json={"name": "x"}, headers=h), 400, "bad_args"),
        (c.get("/api/no/such/route"), 404, "not_found"),  # Werkzeug's own
        (c.put("/api/cluster", json={}, headers=h), 405, "method_not_allowed"),
        (c.post("/api/nodes", data=b"x" * (2 << 20), headers=h), 413, "request_entity_too_large"),
        (c.get("/api/test/boom"), 500, "internal"),
        (web.client(login=False).get("/api/overview"), 401, "login_required"),  # security
        (c.post("/api/nodes/demo/processes/<0.1.0>/kill", json={}), 403, "csrf"),
    ]
    for resp, status, code in cases:
        body = resp.get_json(silent=True)
        assert body is not None, (status, code, resp.status_code, resp.get_data(as_text=True)[:300])
        assert (resp.status_code, body) == (status, {"ok": False, "error": code, "message": body["message"]}), body
        assert body["message"] and "Traceback" not in body["message"]
    assert "ZeroDivisionError" not in c.get("/api/test/boom").get_data(as_text=True)


def test_pages_answer_errors_as_html_with_the_same_status(web: Web) -> None:
    c = web.client()
    for path, status in (("/nodes/nope/tree", 404), ("/crash/424242", 404), ("/no/such/page", 404)):
        resp = c.get(path, headers={"Accept": "text/html"})
        assert resp.status_code == status and resp.mimetype == "text/html", path
        assert "<h1>404</h1>" in resp.get_data(as_text=True)
    # a program asking a page route for JSON gets the JSON shape
    resp = c.get("/nodes/nope/tree", headers={"Accept": "application/json"})
    assert resp.get_json() == {"ok": False, "error": "unknown_node", "message": "no node 'nope'"}

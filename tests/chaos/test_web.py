"""The Chaos page and /api/chaos: the real app (Flask test client) on the real demo through the real agent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from examples.demo_system import PAYMENTS, build
from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from observer.live import NAMESPACE
from observer.permissions import parse_login_tokens
from tests.agent.conftest import OP_TOKEN, READ_TOKEN, Host
from tests.observer import wait_for
from tests.observer.test_app import ORIGIN, PORT, page_config

LOGIN = "login-token-for-chaos-tests"
NO_CHAOS = "login-token-without-chaos"


class ChaosWeb:
    def __init__(self, tmp: Path, *, allow_destructive: bool, db: str | None = None) -> None:
        self.host = Host()
        self.demo = self.host.run_async(build(self.host.node, seed=7, traffic=False))
        self.store = HistoryStore(db or str(tmp / "history.sqlite3"), batch_interval=0.02)
        self.manager = AttachManager(self.store, change_interval=0.02)
        grants = parse_login_tokens(f"{LOGIN} role=operator name=op\n{NO_CHAOS} role=operator actions=kill name=killer")
        token = OP_TOKEN if allow_destructive else READ_TOKEN
        self.config = ObserverConfig(
            host="127.0.0.1",
            port=PORT,
            login_token=LOGIN,
            allow_destructive_actions=allow_destructive,
            attach=(AttachSpec("demo", f"127.0.0.1:{self.host.agent.port}", token),),
            manager=self.manager,
            store=self.store,
            grants=grants,
        )
        self.app, self.socketio = create_app(self.config)
        self.app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"
        self.state = self.app.extensions["observer"]
        self.model = self.state.model("demo")
        wait_for(lambda: self.model.status == "up" and PAYMENTS in self.model.names(), what="attached")

    def client(self, token: str = LOGIN) -> tuple[FlaskClient, dict[str, str]]:
        c = self.app.test_client()
        assert c.post("/login", data={"token": token}).status_code == 302
        return c, {"X-CSRF-Token": str(page_config(c)["csrf"]), "Origin": ORIGIN}

    def close(self) -> None:
        self.state.close()
        self.manager.close()
        self.store.close()
        self.host.run_async(self.demo.stop())
        self.host.stop()


@pytest.fixture
def make_web(tmp_path: Path) -> Iterator[Callable[..., ChaosWeb]]:
    made: list[ChaosWeb] = []

    def make(**kw: Any) -> ChaosWeb:
        w = ChaosWeb(tmp_path, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


BODY: dict[str, Any] = {
    "node": "demo",
    "confirm": True,
    "title": "from the browser",
    "kill": {"interval_ms": 20, "duration_s": 30, "mode": "within_budget", "budget_margin": 1, "seed": 4},
    "hypothesis": {"recovery_ms": 3000, "max_give_ups": 0, "process_tolerance": "20%", "children_restored": True},
    "settle_s": 3,
}


def audits(w: ChaosWeb, action: str) -> list[dict[str, Any]]:
    w.store.flush()
    return [a for a in w.store.audits(limit=5000) if a["action"] == action]


def test_starting_is_refused_and_audited_without_the_destructive_flag(make_web: Callable[..., ChaosWeb]) -> None:
    w = make_web(allow_destructive=False)
    c, h = w.client()
    resp = c.post("/api/chaos/experiments", json=BODY, headers=h)
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "destructive_actions_disabled"
    refused = audits(w, "chaos")
    assert refused and refused[0]["ok"] == 0
    cfg = page_config(c, "/chaos")
    assert cfg["view"] == "chaos" and cfg["may_chaos"] is False
    assert 'id="chaos-form"' in c.get("/chaos").get_data(as_text=True)


def test_bad_input_no_grant_and_no_confirmation_get_4xx(make_web: Callable[..., ChaosWeb]) -> None:
    w = make_web(allow_destructive=True)
    anonymous = w.app.test_client()
    assert anonymous.get("/api/chaos/experiments").status_code == 401
    assert anonymous.post("/api/chaos/experiments", json=BODY).status_code in (401, 403)
    assert anonymous.get("/chaos").status_code == 302  # to the login page
    c, h = w.client()
    assert c.post("/api/chaos/experiments", json=BODY).status_code in (400, 403)  # no CSRF token
    assert c.post("/api/chaos/experiments", data="nope", headers=h | {"Content-Type": "text/plain"}).status_code == 400
    cases = [
        ({"node": "nowhere"}, 404, "unknown_node"),
        ({"kill": {"interval_ms": -1, "kills": 3}}, 400, "bad_experiment"),
        ({"kill": {"policy": "often", "kills": 3}}, 400, "bad_experiment"),
        ({"kill": {"interval_ms": 10}}, 400, "bad_experiment"),
        ({"kill": {"kills": 3, "shoot": "everything"}}, 400, "bad_experiment"),
        ({"hypothesis": {"recovery_ms": "soon"}}, 400, "bad_experiment"),
        ({"hypothesis": {"process_tolerance": "lots"}}, 400, "bad_experiment"),
        ({"experiment": {"title": "x", "method": []}}, 400, "bad_experiment"),
        ({"confirm": False}, 400, "confirmation_required"),
        ({"confirm": "yes"}, 400, "confirmation_required"),
    ]
    for patch, status, code in cases:
        resp = c.post("/api/chaos/experiments", json=BODY | patch, headers=h)
        assert (resp.status_code, resp.get_json()["error"]) == (status, code), (patch, resp.get_json())
    assert c.get("/api/chaos/experiments/nope").status_code == 404
    assert c.post("/api/chaos/experiments/nope/abort", json={}, headers=h).status_code == 404
    assert c.get("/api/chaos/active?since=abc").status_code == 400
    c2, h2 = w.client(NO_CHAOS)
    resp = c2.post("/api/chaos/experiments", json=BODY, headers=h2)
    assert resp.status_code == 403 and resp.get_json()["error"] == "not_permitted"
    assert page_config(c2, "/chaos")["may_chaos"] is False
    assert audits(w, "kill") == [], "nothing was killed"


def test_start_watch_and_stop_an_experiment(make_web: Callable[..., ChaosWeb], history_where: str) -> None:
    w = make_web(allow_destructive=True, db=history_where)  # the journal and audit rows on SQLite and PostgreSQL
    c, h = w.client()
    assert page_config(c, "/chaos")["may_chaos"] is True
    resp = c.post("/api/chaos/experiments", json=BODY, headers=h)
    assert resp.status_code == 202, resp.get_json()
    exp_id = resp.get_json()["id"]
    again = c.post("/api/chaos/experiments", json=BODY, headers=h)
    assert again.status_code == 409
    wait_for(lambda: c.get(f"/api/chaos/experiments/{exp_id}").get_json()["summary"]["carried_out"] >= 3, timeout=20)
    listed = c.get("/api/chaos/experiments").get_json()
    assert [r["id"] for r in listed["running"]] == [exp_id]
    active = c.get("/api/chaos/active", query_string={"node": "demo", "since": 0}).get_json()
    assert active["experiments"][0]["kills"], "the tree page gets the kills to flash"
    stopped = c.post(f"/api/chaos/experiments/{exp_id}/abort", json={}, headers=h)
    assert stopped.status_code == 200
    aborted_at = stopped.get_json()["aborted_at"]
    wait_for(lambda: c.get(f"/api/chaos/experiments/{exp_id}").get_json()["status"] != "running", timeout=20)
    j = c.get(f"/api/chaos/experiments/{exp_id}").get_json()
    assert j["status"] == "aborted" and j["aborted_at"] == aborted_at
    assert all(k["time"] <= aborted_at for k in j["kills"])
    assert j["ended"] - j["started"] < 25, "stopped long before its 30 s"
    # audited: the experiment, each kill (before it was sent), the abort
    start = audits(w, "chaos_start")
    assert len(start) == 1 and start[0]["target"] == exp_id and start[0]["ok"] == 1
    kill_rows = [a for a in audits(w, "kill") if (a["args"] or {}).get("experiment") == exp_id]
    assert len(kill_rows) == len(j["kills"])  # one may have been audited, then not sent: the abort came
    for k in j["kills"]:
        if k["status"] != "error":
            assert any(a["target"] == k["pid"] and a["time"] <= k["time"] for a in kill_rows), k
    assert len(audits(w, "chaos_abort")) == 1
    # the journal is in the history, also once the service forgot it
    history = lambda: c.get("/api/chaos/experiments").get_json()["history"]  # noqa: E731
    wait_for(lambda: any(r["id"] == exp_id and r["status"] == "aborted" for r in history()))
    w.app.extensions["chaos"].engines.clear()
    stored = c.get(f"/api/chaos/experiments/{exp_id}").get_json()
    assert stored["status"] == "aborted" and stored["kills_total"] == len(j["kills"])
    # nothing runs any more: no kills for the tree to flash
    assert c.get("/api/chaos/active?node=demo").get_json() == {"experiments": []}


def test_progress_is_pushed_to_the_chaos_feed_until_the_journal_is_saved(make_web: Callable[..., ChaosWeb]) -> None:
    w = make_web(allow_destructive=True)
    c, h = w.client()
    sio = w.socketio.test_client(w.app, namespace=NAMESPACE, flask_test_client=c)
    sio.emit("subscribe", {"feed": "chaos"}, namespace=NAMESPACE)
    items: list[dict[str, Any]] = []

    def pushed(pred: Callable[[dict[str, Any]], bool]) -> bool:
        for m in sio.get_received(NAMESPACE):
            if m["name"] == "feed" and m["args"][0]["feed"] == "chaos":
                items.extend(m["args"][0]["items"])
        return any(pred(i) for i in items)

    exp_id = c.post("/api/chaos/experiments", json=BODY, headers=h).get_json()["id"]
    resolved = lambda i: i.get("id") == exp_id and any(k["status"] == "recovered" for k in i.get("kills", []))  # noqa: E731
    wait_for(lambda: pushed(resolved), timeout=20, what="a recovered kill pushed")
    head = next(i for i in items if resolved(i))
    assert head["node"] == "demo" and head["status"] == "running" and head["summary"]["carried_out"] >= 1
    assert all(k["recovery_ms"] is not None for k in head["kills"] if k["status"] == "recovered")
    assert c.post(f"/api/chaos/experiments/{exp_id}/abort", json={}, headers=h).status_code == 200
    wait_for(lambda: pushed(lambda i: i.get("saved") is True), timeout=30, what="the final journal saved")
    final = [i for i in items if i.get("id") == exp_id and "status" in i][-1]
    assert final["status"] == "aborted" and final["hypothesis_held"] is not None
    # the kills pushed are the journal's: the page that follows the feed misses none
    j = c.get(f"/api/chaos/experiments/{exp_id}").get_json()
    pushed_kills = {k["n"]: k["status"] for i in items if i.get("id") == exp_id for k in i.get("kills", [])}
    final_kills = {k["n"]: k["status"] for k in j["kills"]}
    assert pushed_kills and all(final_kills[n] == s for n, s in pushed_kills.items() if s != "pending")
    sio.disconnect(namespace=NAMESPACE)

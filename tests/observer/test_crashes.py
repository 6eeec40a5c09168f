"""Crash reports in the observer: stored in SQLite (and PostgreSQL), grouped by
signature, served as JSON twins and pages; the flight recorder switched from the
inspector's API. A real node + agent + AttachManager + history store behind the
Flask test client."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import actors
from tests.observer import test_app, wait_for
from tests.observer.test_app import Web, csrf_headers
from tests.pgcluster import table_names

make_web = test_app.make_web  # the fixture


class Boom(actors.GenServer):
    async def init(self, *args: Any) -> Any:
        return {"n": 0, "secret": "s3cr3t-state"}

    async def handle_call(self, request: Any, from_: actors.From, state: Any) -> Any:
        return actors.Reply("ok", {**state, "n": state["n"] + 1})

    async def handle_cast(self, request: Any, state: Any) -> Any:
        if request == "other":
            return _other(state)
        raise ValueError(f"boom {request}")


def _other(state: Any) -> Any:
    return state["missing"]


def _start(web: Web) -> str:
    async def build() -> actors.Pid:
        return await actors.start_supervisor(
            web.host.node, [Boom.child_spec(id="boomer", name="boomer")], intensity=100, name="boom_sup"
        )

    return str(web.host.run_async(build()))


def _crash(web: Web, msg: Any) -> str:
    """Cast ``msg`` to the current 'boomer' and wait for its restart; the old pid."""
    old = web.host.run(lambda: web.host.node.whereis("boomer"))
    assert old is not None
    web.host.run_async(web.host.node.call(old, "tick"))
    web.host.run(lambda: web.host.node.cast(old, msg))
    wait_for(lambda: web.host.run(lambda: web.host.node.whereis("boomer")) not in (None, old), what="restart")
    return str(old)


def test_identical_crashes_group_by_signature_in_the_store_and_the_api(
    make_web: Callable[..., Web], history_where: str
) -> None:
    web = make_web(allow_destructive=True, db=history_where)
    sup = _start(web)
    pids = [_crash(web, i) for i in range(3)]
    other = _crash(web, "other")
    c = web.client()

    def groups() -> list[dict[str, Any]]:
        body = c.get("/api/crashes?node=demo").get_json()
        return list(body["groups"])

    wait_for(lambda: sum(g["count"] for g in groups()) == 4, what="4 crashes stored")
    gs = {g["exception"]: g for g in groups()}
    assert gs["ValueError"]["count"] == 3 and gs["KeyError"]["count"] == 1
    assert gs["ValueError"]["frame"].endswith("test_crashes.py:Boom.handle_cast")
    assert gs["KeyError"]["frame"].endswith("test_crashes.py:_other")
    assert gs["ValueError"]["first_seen"] < gs["ValueError"]["last_seen"]
    assert gs["ValueError"]["latest"]["pid"] == pids[-1] and gs["KeyError"]["latest"]["pid"] == other
    # the tables themselves: one group row per signature, one row per crash, stored once
    db = web.store.db
    assert db.execute("SELECT COUNT(*) AS n FROM crash_groups WHERE node = 'demo'") == [{"n": 2}]
    assert db.execute("SELECT COUNT(*) AS n FROM crashes WHERE node = 'demo'") == [{"n": 4}]
    assert db.execute("SELECT COUNT(*) AS n FROM crashes WHERE report IS NULL") == [{"n": 0}]
    assert "crashes" in table_names(db) and "crash_reports" not in table_names(db)
    # the events page's crashes (a time window) are the same rows
    window = c.get("/api/events?node=demo&q=boom").get_json()["crashes"]
    assert {x["id"] for x in window} >= {g["latest"]["id"] for g in groups() if g["exception"] == "ValueError"}
    # one report: exactly that message, the state before, the ancestry, a tree link with that path
    rid = gs["ValueError"]["latest"]["id"]
    one = c.get(f"/api/crashes/{rid}").get_json()
    r = one["report"]
    assert r["message"]["value"] == 2 and r["message_kind"] == "cast"
    assert r["state"]["value"] == {"n": 1, "secret": "***"}
    assert [a["pid"] for a in r["ancestry"]] == [sup, pids[-1]]
    assert one["tree_url"] == f"/nodes/demo/tree?path={sup},{pids[-1]}"
    assert one["group"]["count"] == 3 and len(one["recent"]) == 3
    assert c.get("/api/crashes/999999").status_code == 404
    assert c.get("/api/crashes/99999999999999999999999").status_code == 404  # past SQL's integers: no 500
    # the pages, and the links the events page and the inspector use
    assert c.get("/crashes").status_code == 200
    page = c.get(f"/crash/{rid}")
    assert page.status_code == 200 and b'"crash_id":' in page.data
    found = c.get(f"/crash/find?node=demo&pid={pids[0]}")
    assert found.status_code == 302 and found.headers["Location"].startswith("/crash/")
    slot = c.get("/api/nodes/demo/processes/boomer/crashes").get_json()
    assert {x["pid"] for x in slot["crashes"]} == {*pids, other}


def test_flight_recorder_is_switched_from_the_api_by_operators_only(make_web: Callable[..., Web]) -> None:
    ro = make_web(allow_destructive=False)
    c = ro.client()
    _start(ro)
    wait_for(lambda: ro.find("boom_sup"), what="the supervisor in the model")
    resp = c.post("/api/nodes/demo/processes/boom_sup/flight_recorder", json={"on": True}, headers=csrf_headers(c))
    assert resp.status_code == 403 and resp.get_json()["error"] == "destructive_actions_disabled"
    assert ro.host.run(lambda: all(p._flight is None for p in ro.host.node.iter_processes()))


def test_flight_recorder_on_for_a_subtree_shows_in_the_report(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    sup = _start(web)
    wait_for(lambda: web.find("boom_sup"), what="the supervisor in the model")
    h = csrf_headers(c)
    bad = c.post("/api/nodes/demo/processes/boom_sup/flight_recorder", json={"on": "yes"}, headers=h)
    assert bad.status_code == 400
    resp = c.post(
        "/api/nodes/demo/processes/boom_sup/flight_recorder", json={"on": True, "subtree": True, "size": 5}, headers=h
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert sup in resp.get_json()["result"]["pids"]
    wait_for(
        lambda: any(a["action"] == "flight_recorder" and a["ok"] for a in c.get("/api/audit").get_json()["audit"]),
        what="the audit row and its result",
    )
    old = _crash(web, "x")
    wait_for(lambda: c.get("/api/crashes?node=demo").get_json()["groups"], what="the crash stored")
    rid = c.get("/api/crashes?node=demo").get_json()["groups"][0]["latest"]["id"]
    r = c.get(f"/api/crashes/{rid}").get_json()["report"]
    assert r["pid"] == old
    assert [f["kind"] for f in r["flight"]] == ["call", "cast"] and r["flight"][1]["message"] == "x"

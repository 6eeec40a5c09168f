"""The ``/live`` namespace: subscribe/ack, batched ``batch`` messages, ``node_status``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from examples.demo_system import PAYMENTS, conn_name
from observer import HistoryStore
from observer.live import NAMESPACE, LiveHub, coalesce
from observer.model import Change
from tests.observer import wait_for
from tests.observer.test_app import Web, csrf_headers, make_web, web

__all__ = ["make_web", "web"]  # fixtures used here

LAST_CONN = conn_name(4)  # scale 1: a pool of 4 connections


def _received(sio: Any, name: str) -> list[dict[str, Any]]:
    return [m["args"][0] for m in sio.get_received(NAMESPACE) if m["name"] == name]


def test_subscribe_joins_the_node_room_and_acks(web: Web) -> None:
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=web.client())
    sio.emit("subscribe", {"node": "demo", "view": "tree"}, namespace=NAMESPACE)
    (ack,) = _received(sio, "ack")
    assert ack["ok"] and ack["room"] == "node:demo" and ack["status"] == "up"
    sio.emit("subscribe", {"node": "nope"}, namespace=NAMESPACE)
    sio.emit("subscribe", "garbage", namespace=NAMESPACE)
    sio.emit("subscribe", {"node": "demo", "view": "bogus"}, namespace=NAMESPACE)
    errors = [a["error"] for a in _received(sio, "ack")]
    assert errors == ["unknown_node", "unknown_node", "bad_view"]
    sio.disconnect(namespace=NAMESPACE)


def test_many_events_arrive_in_few_batches(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=c)
    sio.emit("subscribe", {"node": "demo", "view": "overview"}, namespace=NAMESPACE)
    sio.get_received(NAMESPACE)
    seen_before = web.state.hub.changes_seen
    # each kill of the last connection (rest_for_one: only it restarts; the pool's
    # budget is 14 restarts): exit + spawn + restart (+ updates) in the model
    for _ in range(8):
        pid = web.pid(LAST_CONN)
        assert c.post(f"/api/nodes/demo/processes/{pid}/kill", json={}, headers=csrf_headers(c)).status_code == 200
        wait_for(lambda p=pid: web.find(LAST_CONN) not in (None, p), what="restarted")  # type: ignore[misc]
    batches: list[dict[str, Any]] = []

    def restarts_seen() -> bool:
        batches.extend(_received(sio, "batch"))
        return sum(1 for b in batches for ch in b["changes"] if ch["kind"] == "restart") >= 8

    wait_for(restarts_seen, what="8 restarts pushed")
    changes = web.state.hub.changes_seen - seen_before
    assert len(batches) < changes, (len(batches), changes)
    assert [b["seq"] for b in batches] == sorted(b["seq"] for b in batches)
    assert all(b["node"] == "demo" and b["stats"]["name"] == "demo" for b in batches)
    kinds = {ch["kind"] for b in batches for ch in b["changes"]}
    assert {"exit", "spawn", "restart"} <= kinds
    sio.disconnect(namespace=NAMESPACE)


def test_node_status_when_the_agent_goes_away(web: Web) -> None:
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=web.client())
    sio.emit("subscribe", {"node": "demo"}, namespace=NAMESPACE)
    web.host.agent.stop()
    statuses: list[dict[str, Any]] = []

    def down() -> bool:
        statuses.extend(_received(sio, "node_status"))
        return any(s["status"] == "down" for s in statuses)

    wait_for(down, what="node_status down")
    assert statuses[-1] == {"node": "demo", "status": "down"}
    assert web.client().get("/api/overview").get_json()["nodes"][0]["status"] == "down"
    assert PAYMENTS in web.model.names()  # the last-known picture is kept
    sio.disconnect(namespace=NAMESPACE)


def test_coalesce_merges_per_process_and_keeps_lifecycle_order() -> None:
    changes = [
        Change("update", "<0.1.0>", {"mailbox": 1}),
        Change("spawn", "<0.2.0>", {"name": "a"}),
        Change("samples", None, {"rows": 3}),
        Change("update", "<0.1.0>", {"status": "running"}),
        Change("exit", "<0.2.0>", {"reason": "normal"}),
        Change("samples", None, {"rows": 4}),
    ]
    out, cut = coalesce(changes)
    assert cut == 0
    assert [(c["kind"], c["pid"]) for c in out] == [
        ("spawn", "<0.2.0>"),
        ("update", "<0.1.0>"),
        ("exit", "<0.2.0>"),
        ("samples", None),
    ]
    assert out[1]["data"] == {"mailbox": 1, "status": "running"} and out[-1]["data"] == {"rows": 7}
    reset, _ = coalesce([Change("spawn", "<0.3.0>"), Change("status", None, {"status": "up"}), Change("reset")])
    assert [c["kind"] for c in reset] == ["status", "reset"]
    many, cut = coalesce([Change("spawn", f"<0.{i}.0>") for i in range(3000)])
    assert cut == 1000 and len(many) == 2000


def test_a_counters_batch_does_not_hold_back_the_next_crash(web: Web) -> None:
    """Lifecycle changes wait ``urgent_gap`` after the last batch that carried
    lifecycle changes, not after a counters-only one."""
    hub = LiveHub(web.socketio, lambda node: {}, interval=0.25, urgent_gap=0.05)
    crash = [Change("exit", "<0.9.0>", {"reason": "boom"})]
    hub.on_change("n", [Change("samples", None, {"rows": 1})])
    hub.flush()
    t = time.monotonic()
    assert hub._due("n", crash, t + 0.001)  # right after a samples batch: goes out
    assert not hub._due("n", [Change("samples", None, {"rows": 2})], t + 0.001)  # counters wait for interval
    hub.on_change("n", crash)
    hub.flush()
    t = time.monotonic()
    assert not hub._due("n", crash, t + 0.01)  # a storm of crashes: at most one batch per urgent_gap
    assert hub._due("n", crash, t + 0.06)


def _follow(web: Web, client: Any, *feeds: str) -> Any:
    """A Socket.IO test client following ``feeds`` (acks checked)."""
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=client)
    for feed in feeds:
        sio.emit("subscribe", {"feed": feed}, namespace=NAMESPACE)
    acks = _received(sio, "ack")
    assert [(a["ok"], a["feed"], a["room"]) for a in acks] == [(True, f, f"feed:{f}") for f in feeds]
    return sio


def _feed_items(sio: Any, into: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Add the items of the ``feed`` messages received since the last call, by feed."""
    for msg in _received(sio, "feed"):
        assert msg["feed"] in ("audit", "crashes", "chaos", "cluster") and "truncated" not in msg
        into.setdefault(msg["feed"], []).extend(msg["items"])
    return into


def test_audit_rows_and_crash_reports_are_pushed_to_their_feeds_once_stored(make_web: Callable[..., Web]) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    sio = _follow(web, c, "audit", "crashes")
    pid = web.pid(PAYMENTS)
    assert c.post(f"/api/nodes/demo/processes/{pid}/kill", json={}, headers=csrf_headers(c)).status_code == 200
    got: dict[str, list[dict[str, Any]]] = {"audit": [], "crashes": []}
    audit, crashes = got["audit"], got["crashes"]

    def pushed() -> bool:
        _feed_items(sio, got)
        done = [i for i in audit if i["kind"] == "audit_result"]
        return bool(done) and any(x["pid"] == pid for x in crashes)

    wait_for(pushed, what="the audit row, its result and the crash report pushed")
    (row,) = [i["row"] for i in audit if i["kind"] == "audit"]
    assert row["action"] == "kill" and row["target"] == pid and row["node"] == "demo" and row["ok"] is None
    (result,) = [i["row"] for i in audit if i["kind"] == "audit_result"]
    assert result["id"] == row["id"] and result["ok"] == 1 and result["result"] == {"pid": pid, "reason": "kill"}
    # the same rows the JSON twins serve: a page can start from those, then follow the pushes
    stored = c.get("/api/audit").get_json()["audit"]
    assert [(a["id"], a["action"], a["ok"]) for a in stored] == [(row["id"], "kill", 1)]
    crash = next(x for x in crashes if x["pid"] == pid)
    assert crash["node"] == "demo" and crash["signature"]
    groups = c.get("/api/crashes?node=demo").get_json()["groups"]
    assert any(g["signature"] == crash["signature"] and g["latest"]["pid"] == pid for g in groups)
    sio.disconnect(namespace=NAMESPACE)


def test_removing_a_node_is_pushed_to_the_cluster_feed(web: Web) -> None:
    c = web.client()
    sio = _follow(web, c, "cluster")
    assert c.delete("/api/nodes/demo", headers=csrf_headers(c)).get_json() == {"ok": True, "node": "demo"}
    got: dict[str, list[dict[str, Any]]] = {}
    items = wait_for(lambda: _feed_items(sio, got).get("cluster"), what="cluster push")
    assert items[-1]["removed"] == "demo" and items[-1]["nodes"] == [] and items[-1]["totals"]["nodes"] == 0
    sio.disconnect(namespace=NAMESPACE)


def test_unknown_feeds_are_refused_and_unfollowed_feeds_send_nothing(web: Web) -> None:
    c = web.client()
    sio = web.socketio.test_client(web.app, namespace=NAMESPACE, flask_test_client=c)
    sio.emit("subscribe", {"feed": "secrets"}, namespace=NAMESPACE)
    sio.emit("subscribe", {"feed": None}, namespace=NAMESPACE)
    assert [(a["ok"], a["error"]) for a in _received(sio, "ack")] == [(False, "unknown_feed")] * 2
    refused = c.post(f"/api/nodes/demo/processes/{web.pid(PAYMENTS)}/kill", json={}, headers=csrf_headers(c))
    assert refused.status_code == 403  # and audited: a row for the audit feed
    web.store.flush()
    web.state.hub.flush()
    assert len(web.store.audits()) == 1 and not _received(sio, "feed")
    sio.disconnect(namespace=NAMESPACE)


def test_keyed_feed_items_coalesce_and_lazy_ones_are_read_when_they_go_out(web: Web) -> None:
    sio = _follow(web, web.client(), "chaos", "audit")
    hub = LiveHub(web.socketio, lambda node: {}, interval=0.25, urgent_gap=0.05)
    hub.shared = True  # the followers are the app's hub's: send whether or not this one has any
    reads: list[int] = []

    def head(n: int) -> Callable[[], dict[str, Any]]:
        return lambda: reads.append(n) or {"id": "x", "n": n}

    hub.publish("chaos", head(1), key="x")
    hub.publish("chaos", {"id": "y"})
    hub.publish("chaos", head(2), key="x")  # replaces the first, goes to the end
    hub.publish("audit", {"kind": "audit", "row": {"id": 7}})
    assert reads == []
    assert hub.flush() == 2
    assert reads == [2]
    msgs = {m["feed"]: m["items"] for m in _received(sio, "feed")}
    assert msgs == {"chaos": [{"id": "y"}, {"id": "x", "n": 2}], "audit": [{"kind": "audit", "row": {"id": 7}}]}
    try:
        hub.publish("nope", {})
    except ValueError as exc:
        assert "unknown feed" in str(exc)
    else:
        raise AssertionError("an unknown feed is refused")
    sio.disconnect(namespace=NAMESPACE)


def test_pages_fed_by_pushes_keep_no_polling_timer() -> None:
    """Crashes, Audit, the cluster table and Chaos (and the tree's chaos flashes)
    start from their JSON twin and follow the /live feeds: no repeating timer."""
    views = Path(__file__).resolve().parents[2] / "web" / "static" / "js" / "views"
    for name in ("crashes.js", "audit.js", "cluster.js", "chaos.js", "chaos_flash.js"):
        text = (views / name).read_text(encoding="utf-8")
        assert "setInterval" not in text and "setTimeout" not in text, name
        assert "feed" in text, name


def test_a_failing_commit_listener_never_stops_the_history_writer(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.sqlite3"), batch_interval=0.01)
    seen: list[tuple[str, dict[str, Any]]] = []

    def broken(kind: str, row: dict[str, Any]) -> None:
        raise RuntimeError("a bug in a listener")

    store.on_commit(broken)
    store.on_commit(lambda kind, row: seen.append((kind, row)))
    try:
        aid = store.audit("me/1", "127.0.0.1", "kill", "<0.1.0>", {"reason": "kill"}, node="n")
        store.audit_result(aid, "x" * 20_000, ok=True)  # stored cut at 10,000 characters: no longer JSON
        store.audit_result(aid, {"pid": "<0.1.0>"}, ok=True)
        assert store.flush()
        later = store.audit("me/1", "127.0.0.1", "suspend", "<0.2.0>", {}, node="n")  # the writer goes on
        assert store.flush()
    finally:
        store.close()
    assert [(k, r["id"]) for k, r in seen] == [("audit", aid), ("audit_result", aid), ("audit", later)]
    assert seen[0][1] | {"time": 0} == {
        "id": aid, "time": 0, "who": "me/1", "from_addr": "127.0.0.1", "node": "n", "action": "kill",
        "target": "<0.1.0>", "args": {"reason": "kill"}, "ok": None, "result": None, "done_time": None,
    }  # fmt: skip
    assert seen[1][1]["result"] == {"pid": "<0.1.0>"} and seen[1][1]["ok"] == 1

"""Message traces through the web app: a real node and agent, the demo tree, Flask's test client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

import actors
from examples.demo_system import PAYMENTS, build
from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from observer.live import NAMESPACE
from observer.permissions import parse_login_tokens
from observer.trace import as_text
from tests.agent.conftest import READ_TOKEN, Host
from tests.observer import wait_for
from tests.observer.test_app import page_config

PORT = 5000
ORIGIN = f"http://127.0.0.1:{PORT}"
OPS = "ops-token-for-trace-tests"
TRACER = "tracer-token-for-tests"
VIEWER = "viewer-token-for-tests"
BLIND = "blind-token-for-tests"


class TraceWeb:
    """The demo tree (no traffic) with its agent, attached read-only, and logins with grants."""

    def __init__(self, tmp: Path, extra: str = "", db: str | None = None) -> None:
        self.host = Host()
        self.host.run_async(build(self.host.node, seed=7, traffic=False))
        self.store = HistoryStore(db or str(tmp / "history.sqlite3"), batch_interval=0.02)
        self.manager = AttachManager(self.store, change_interval=0.02)
        grants = parse_login_tokens(
            f"{OPS} role=operator name=ops\n{TRACER} role=read actions=inspect,trace name=tracer\n"
            f"{VIEWER} role=read name=viewer\n{extra}"
        )
        self.config = ObserverConfig(
            host="127.0.0.1",
            port=PORT,
            attach=(AttachSpec("demo", f"127.0.0.1:{self.host.agent.port}", READ_TOKEN),),
            manager=self.manager,
            store=self.store,
            grants=grants,
        )
        self.app, self.socketio = create_app(self.config)
        self.app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"
        self.state = self.app.extensions["observer"]
        self.model = self.state.model("demo")
        wait_for(lambda: self.model.status == "up" and PAYMENTS in self.model.names(), what="attached")

    def client(self, token: str) -> FlaskClient:
        c = self.app.test_client()
        assert c.post("/login", data={"token": token}).status_code == 302  # a URL's token works once
        return c

    def headers(self, c: FlaskClient) -> dict[str, str]:
        return {"X-CSRF-Token": str(page_config(c)["csrf"]), "Origin": ORIGIN}

    def checkout(self, n: int) -> actors.Pid:
        """A process that calls the payment worker ``n`` times once sent ``go``."""

        async def body(proc: actors.Process) -> None:
            await proc.receive()
            for i in range(n):
                await proc.call(PAYMENTS, ("status", {"charge_id": f"ch_{i}", "card_token": "tok_4242_secret"}))
            await proc.receive()

        pid = self.host.spawn(body, name="checkout")
        wait_for(lambda: "checkout" in self.model.names(), what="the observer knows the checkout")
        return pid

    def close(self) -> None:
        self.state.close()
        self.manager.close()
        self.store.close()
        self.host.stop()


@pytest.fixture
def tweb(tmp_path: Path, history_where: str) -> Iterator[TraceWeb]:
    w = TraceWeb(tmp_path, db=history_where)  # the traces stored on SQLite and on PostgreSQL
    yield w
    w.close()


def _audits(w: TraceWeb, action: str) -> list[dict[str, Any]]:
    w.store.flush()
    return [a for a in w.store.audits(limit=500) if a["action"] == action]


def test_a_trace_pairs_calls_and_replies_pushes_them_and_keeps_them_redacted(tweb: TraceWeb) -> None:
    c = tweb.client(TRACER)
    sio = tweb.socketio.test_client(tweb.app, namespace=NAMESPACE, flask_test_client=c)
    sio.emit("subscribe", {"feed": "trace"}, namespace=NAMESPACE)
    caller = tweb.checkout(3)
    r = c.post(
        "/api/nodes/demo/traces",
        json={"pids": [PAYMENTS, "checkout"], "max_msgs": 7, "duration": 20},
        headers=tweb.headers(c),
    )
    assert r.status_code == 200, r.get_json()
    tid = r.get_json()["trace"]["id"]
    tweb.host.run(lambda: tweb.host.node.send(caller, "go"))
    got = wait_for(lambda: (d := c.get(f"/api/traces/{tid}").get_json())["trace"]["end"] and d, what="trace end")
    assert got["trace"]["end"] == "msgs" and got["trace"]["count"] == 7
    pay = tweb.model.names()[PAYMENTS]
    pairs = [(m["kind"], m["from"], m["to"]) for m in got["msgs"] if m["kind"] in ("call", "reply")]
    assert pairs == [("call", str(caller), pay), ("reply", pay, str(caller))] * 3
    calls = [m for m in got["msgs"] if m["kind"] == "call"]
    replies = [m for m in got["msgs"] if m["kind"] == "reply"]
    assert [m["call"] for m in calls] == [m["call"] for m in replies]
    assert all(m["latency_ms"] is not None for m in replies)
    assert all(json.dumps(m["msg"]).count("tok_4242") == 0 for m in got["msgs"])  # the card token is masked
    # pushed on the trace feed, not polled
    items: list[dict[str, Any]] = []

    def pushed_end() -> bool:
        for m in sio.get_received(NAMESPACE):
            if m["name"] == "feed" and m["args"][0]["feed"] == "trace":
                items.extend(m["args"][0]["items"])
        return any(i.get("trace") == tid and i.get("end") == "msgs" for i in items)

    wait_for(pushed_end, what="the end pushed")
    assert sum(len(i.get("msgs") or ()) for i in items if i.get("trace") == tid) == 7
    # history (from the database once this server forgets it), and the exports
    tweb.store.flush()
    tweb.state.traces._traces.clear()
    stored = c.get(f"/api/traces/{tid}").get_json()
    assert stored["trace"]["end"] == "msgs" and len(stored["msgs"]) == 7
    assert "tok_4242" not in json.dumps(stored)
    listed = c.get("/api/traces?node=demo").get_json()
    assert [t["id"] for t in listed["stored"]] == [tid] and listed["can_trace"] is True
    text = c.get(f"/api/traces/{tid}/export?format=text").get_data(as_text=True)
    assert f"{pay}(payments) << {{'$gen_call'" in text and "'$gen_reply'" in text and "tok_4242" not in text
    exported = json.loads(c.get(f"/api/traces/{tid}/export?format=json").get_data(as_text=True))
    assert exported["msgs"] == stored["msgs"]
    starts, ends = _audits(tweb, "trace_start"), _audits(tweb, "trace_end")
    assert starts[0]["who"].startswith("tracer/") and starts[0]["ok"] == 1
    assert ends and ends[0]["result"]["end"] == "msgs"
    sio.disconnect(namespace=NAMESPACE)


def test_a_login_without_the_grant_is_refused_and_the_refusal_audited(tweb: TraceWeb) -> None:
    c = tweb.client(VIEWER)
    r = c.post("/api/nodes/demo/traces", json={"pids": [PAYMENTS]}, headers=tweb.headers(c))
    assert r.status_code == 403 and r.get_json()["error"] == "not_permitted"
    refused = _audits(tweb, "trace_start")
    assert refused and refused[0]["ok"] == 0 and refused[0]["who"].startswith("viewer/")
    assert tweb.host.run(lambda: tweb.host.node.process(PAYMENTS).traced) is False
    assert c.get("/api/traces").get_json()["can_trace"] is False


def test_stop_duration_and_pattern(tweb: TraceWeb) -> None:
    c = tweb.client(OPS)
    h = tweb.headers(c)
    r = c.post("/api/nodes/demo/traces", json={"pattern": "pay*", "duration": 60}, headers=h)
    assert r.status_code == 200, r.get_json()
    tr = r.get_json()["trace"]
    assert tweb.model.names()[PAYMENTS] in tr["spec"]["pids"]
    stopped = c.post(f"/api/traces/{tr['id']}/stop", headers=h).get_json()
    assert stopped["trace"]["end"] == "stopped"
    assert tweb.host.run(lambda: tweb.host.node.process(PAYMENTS).traced) is False
    assert c.post(f"/api/traces/{tr['id']}/stop", headers=h).status_code == 404
    r = c.post("/api/nodes/demo/traces", json={"pids": [PAYMENTS], "duration": 0.2}, headers=h)
    tid = r.get_json()["trace"]["id"]
    wait_for(lambda: c.get(f"/api/traces/{tid}").get_json()["trace"]["end"] == "duration", what="duration end")
    for bad in ({"pids": [PAYMENTS], "dir": "up"}, {"pids": [PAYMENTS], "max_msgs": 0}, {}, {"pattern": "zz*"}):
        assert c.post("/api/nodes/demo/traces", json=bad, headers=h).status_code in (400, 404), bad
    assert _audits(tweb, "trace_stop")[0]["ok"] == 1


def test_text_export_reads_like_redbug() -> None:
    trace = {"id": "t", "node": "n", "count": 2, "dropped": 3, "end": "rate", "spec": {"names": {"<0.4.0>": "pay"}}}
    msgs = [
        {
            "time": 0.5,
            "kind": "call",
            "from": None,
            "to": "<0.4.0>",
            "msg": {"__type__": "tuple", "items": ["a", 1]},
            "call": 1,
        },
        {"time": 0.6, "kind": "reply", "from": "<0.4.0>", "to": None, "msg": "ok", "call": 1, "latency_ms": 0.1},
    ]
    lines = as_text(trace, msgs).splitlines()
    assert lines[1].endswith("<0.4.0>(pay) << {'$gen_call',#1,{a,1}} from outside")
    assert lines[2].endswith("<0.4.0>(pay) >> {'$gen_reply',#1,ok} (0.1 ms) to outside")
    assert lines[-1] == "% ... 3 messages dropped (limits cut in)"


def test_a_node_going_down_ends_its_traces_as_detached_and_audited(tweb: TraceWeb) -> None:
    c = tweb.client(TRACER)
    r = c.post("/api/nodes/demo/traces", json={"pids": [PAYMENTS], "duration": 60}, headers=tweb.headers(c))
    tid = r.get_json()["trace"]["id"]
    tweb.host.agent.stop()
    wait_for(lambda: c.get(f"/api/traces/{tid}").get_json()["trace"]["end"] == "detached", what="detached")
    wait_for(lambda: any(a["result"] for a in _audits(tweb, "trace_end")), what="the end audited")
    assert _audits(tweb, "trace_end")[0]["result"]["end"] == "detached"


def test_a_login_without_inspect_or_trace_reads_no_trace(tmp_path: Path) -> None:
    w = TraceWeb(tmp_path, extra=f"{BLIND} role=read actions= name=blind\n")
    try:
        c = w.client(BLIND)
        assert c.get("/api/traces").status_code == 403
        sio = w.socketio.test_client(w.app, namespace=NAMESPACE, flask_test_client=c)
        sio.emit("subscribe", {"feed": "trace"}, namespace=NAMESPACE)
        acks = [m["args"][0] for m in sio.get_received(NAMESPACE) if m["name"] == "ack"]
        assert acks == [{"ok": False, "error": "not_permitted", "feed": "trace"}]
        sio.disconnect(namespace=NAMESPACE)
    finally:
        w.close()

"""Chaos against a real asyncio node: an aiohttp service on an observed loop,
its workers cancelled at random by pattern through the agent's ``cancel``,
the service probed over HTTP all along; and the clear refusals of what does
not apply to the node's kind."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")
from aiohttp import web
from click.testing import CliRunner

from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from observer.chaos import ExperimentError, parse
from observer.chaos.runner import attached, run
from observer.cli import main
from observer.permissions import parse_login_tokens
from tests.agent.aio_host import LoopHost, hosted
from tests.agent.conftest import OP_TOKEN
from tests.chaos.conftest import TOKEN, DemoHost
from tests.observer import wait_for
from tests.observer.test_app import ORIGIN, PORT, page_config

pytestmark = pytest.mark.timeout(60)


class Service:
    """Workers ``worker-N`` kept at four by a keeper that replaces a cancelled one; ``/health``."""

    def __init__(self) -> None:
        self.cancelled_workers = 0
        self.keeper_cancelled = False
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.workers: dict[int, asyncio.Task[None]] = {}
        self.changed: asyncio.Event | None = None

    async def worker(self) -> None:
        try:
            await asyncio.Event().wait()  # works until cancelled
        except asyncio.CancelledError:
            self.cancelled_workers += 1
            raise

    async def keeper(self) -> None:
        n = 0
        assert self.changed is not None
        try:
            while True:
                for k, t in list(self.workers.items()):
                    if t.done():
                        del self.workers[k]
                while len(self.workers) < 4:
                    n += 1
                    t = asyncio.create_task(self.worker(), name=f"worker-{n}")
                    t.add_done_callback(lambda _t: self.changed.set())  # type: ignore[union-attr]
                    self.workers[n] = t
                self.changed.clear()
                await self.changed.wait()
        except asyncio.CancelledError:
            self.keeper_cancelled = True
            raise

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def strict(self, request: web.Request) -> web.Response:
        """Healthy only while no worker was ever cancelled."""
        return web.Response(status=503 if self.cancelled_workers else 200)

    async def down(self, request: web.Request) -> web.Response:
        return web.Response(status=503, text="down")

    async def start(self) -> None:
        self.changed = asyncio.Event()
        self.keeper_task = asyncio.create_task(self.keeper(), name="keeper")
        app = web.Application()
        app.add_routes([web.get("/health", self.health), web.get("/down", self.down), web.get("/strict", self.strict)])
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def service() -> Iterator[tuple[LoopHost, Service]]:
    for h in hosted():
        svc = Service()
        h.submit(svc.start()).result(10)
        yield h, svc
        h.submit(svc.stop()).result(10)


def experiment(port: int, *, method: list[dict[str, Any]], path: str = "/health", **extra: Any) -> dict[str, Any]:
    return {
        "title": "workers survive cancellation",
        "settle_s": 2,
        "steady-state-hypothesis": {
            "probes": [
                {
                    "type": "probe",
                    "name": "the service answers",
                    "tolerance": True,
                    "provider": {
                        "type": "observer",
                        "func": "http",
                        "arguments": {"url": f"http://127.0.0.1:{port}{path}", "status": 200, "timeout_s": 2},
                    },
                },
                *extra.pop("probes", []),
            ]
        },
        "method": method,
        **extra,
    }


def cancel_action(**args: Any) -> dict[str, Any]:
    return {
        "type": "action",
        "name": "cancel workers",
        "provider": {"type": "observer", "func": "cancel", "arguments": args},
    }


def wait_for_workers(att: Any, n: int) -> None:
    """The observer's picture holds ``n`` worker tasks (they are drawn 100 ms after they start)."""
    there = threading.Event()

    def look(_changes: Any = None) -> None:
        with att.model.locked() as g:
            if sum(1 for _, r in g.nodes(data=True) if str(r.get("name") or "").startswith("worker-")) >= n:
                there.set()

    off = att.on_change(look)
    try:
        look()
        assert there.wait(10), "the workers never appeared in the picture"
    finally:
        off()


def test_cancelling_random_workers_while_the_service_keeps_answering(service: tuple[LoopHost, Service]) -> None:
    h, svc = service
    exp = parse(experiment(svc.port, method=[cancel_action(names=["worker-*"], interval_ms=100, cancels=4, seed=3)]))
    with attached(f"127.0.0.1:{h.agent.port}", OP_TOKEN) as (mgr, att):
        wait_for_workers(att, 4)
        _, j = run(mgr, att, exp)
    assert j["status"] == "completed" and j["hypothesis_held"] is True, (j["error"], j["deviations"])
    assert any("budgets" in n and "do not apply" in n for n in j["notes"])
    cancels = j["kills"]
    assert len(cancels) == 4 and all(c["command"] == "cancel" for c in cancels)
    assert all(c["status"] == "cancelled" and c["name"].startswith("worker-") for c in cancels), cancels
    assert len({c["pid"] for c in cancels}) == 4
    http_checks = [c for c in j["checks"] if c["func"] == "http"]
    assert {c["phase"] for c in http_checks} >= {"before", "after"}
    assert all(c["ok"] and c["value"] == 200 for c in http_checks)
    assert h.call(lambda: svc.cancelled_workers) == 4  # the application's own tasks really took them
    assert h.call(lambda: svc.keeper_cancelled) is False  # not matching the pattern: never touched


def test_an_http_probe_failing_during_the_method_is_a_deviation(service: tuple[LoopHost, Service]) -> None:
    h, svc = service
    spec = cancel_action(names=["worker-*"], interval_ms=300, duration_s=20, seed=1)
    exp = experiment(svc.port, path="/strict", method=[spec], check_interval_s=0.05, settle_s=0.5)
    with attached(f"127.0.0.1:{h.agent.port}", OP_TOKEN) as (mgr, att):
        wait_for_workers(att, 4)
        _, j = run(mgr, att, parse(exp))
    assert j["status"] == "deviated" and j["hypothesis_held"] is False
    dev = j["deviations"][0]
    assert dev["probe"] == "the service answers" and dev["phase"] in ("during", "after") and "503" in dev["message"]
    assert len(j["kills"]) < 10  # stopped at the deviation, not after 20 s of cancels


def test_an_http_probe_that_fails_before_stops_the_experiment(service: tuple[LoopHost, Service]) -> None:
    h, svc = service
    exp = parse(experiment(svc.port, path="/down", method=[cancel_action(names=["worker-*"], cancels=1)]))
    with attached(f"127.0.0.1:{h.agent.port}", OP_TOKEN) as (mgr, att):
        _, j = run(mgr, att, exp)
    assert j["status"] == "failed" and "did not hold before" in j["error"]
    before = j["checks"][0]
    assert before["func"] == "http" and before["ok"] is False and before["value"] == 503
    assert before["evidence"]["expected"] == 200 and j["kills"] == []
    assert h.call(lambda: svc.cancelled_workers) == 0


def test_kill_actions_and_supervisor_probes_are_refused_on_an_asyncio_node(service: tuple[LoopHost, Service]) -> None:
    h, svc = service
    kill = {"type": "action", "provider": {"type": "observer", "func": "kill", "arguments": {"kills": 1}}}
    gave_up = {"type": "probe", "name": "no give-ups", "tolerance": 0,
               "provider": {"type": "observer", "func": "supervisors_gave_up"}}  # fmt: skip
    with attached(f"127.0.0.1:{h.agent.port}", OP_TOKEN) as (mgr, att):
        _, j = run(mgr, att, parse(experiment(svc.port, method=[kill])))
        assert j["status"] == "failed" and j["hypothesis_held"] is None
        assert "do not apply to an asyncio node" in j["error"] and "'cancel' action" in j["error"]
        assert "not attached as operator" not in j["error"] and j["kills"] == []
        exp = parse(experiment(svc.port, method=[cancel_action(cancels=1)], probes=[gave_up]))
        _, j = run(mgr, att, exp)
        assert "'no give-ups' (supervisors_gave_up) do not apply to an asyncio node" in j["error"]
    assert h.call(lambda: svc.cancelled_workers) == 0


def test_a_cancel_action_is_refused_on_an_actors_node() -> None:
    host = DemoHost()
    try:
        with attached(host.address, TOKEN) as (mgr, att):
            exp = parse(experiment(1, method=[cancel_action(cancels=1)]))
            _, j = run(mgr, att, exp)
        assert j["status"] == "failed" and "apply to asyncio nodes only" in j["error"] and "'kill'" in j["error"]
    finally:
        host.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"cancels": 1, "mode": "unbounded"}, "mode does not apply to a cancel action (an asyncio node has no"),
        ({"cancels": 1, "budget_margin": 0}, "budget_margin does not apply to a cancel action"),
        ({"cancels": 1, "kinds": ["worker"]}, "kinds does not apply"),
        ({"kills": 3}, "kills does not apply to a cancel action (a cancel action counts 'cancels')"),
        ({"cancels": 1, "policy": "sequence"}, "policy of a cancel action must be one of interval, burst"),
        ({}, "give cancels or duration_s"),
    ],
)
def test_options_of_kills_are_refused_in_a_cancel_action_with_the_reason(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(experiment(1, method=[cancel_action(**args)]))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"url": "ftp://x/"}, "url must be an http:// or https:// URL"),
        ({"url": "http://x/", "status": 700}, "status must be an HTTP status"),
        ({"url": "http://x/", "timeout_s": 0}, "timeout_s must be a number"),
        ({"url": "http://x/", "method": "POST"}, "unknown field\\(s\\) of an http probe: method"),
    ],
)
def test_a_bad_http_probe_is_refused(arguments: dict[str, Any], message: str) -> None:
    exp = experiment(1, method=[cancel_action(cancels=1)])
    exp["steady-state-hypothesis"]["probes"][0]["provider"]["arguments"] = arguments
    with pytest.raises(ExperimentError, match=message):
        parse(exp)


def test_the_command_line_cancels_tasks_of_an_asyncio_node(service: tuple[LoopHost, Service], tmp_path: Path) -> None:
    h, svc = service
    tok = tmp_path / "token"
    tok.write_text(OP_TOKEN + "\n")
    url = f"http://127.0.0.1:{svc.port}/health"
    base = ["chaos", "--attach", f"127.0.0.1:{h.agent.port}", "--node-token-file", str(tok), "--quiet"]
    with attached(f"127.0.0.1:{h.agent.port}", OP_TOKEN) as (_mgr, att):
        wait_for_workers(att, 4)
    args = [*base, "--cancels", "2", "--name", "worker-*", "--interval-ms", "50", "--http", url, "--settle-s", "1"]
    out = tmp_path / "journal.json"
    res = CliRunner().invoke(main, [*args, "--journal", str(out)])
    assert res.exit_code == 0, res.output
    j = json.loads(out.read_text())
    assert j["status"] == "completed" and [k["status"] for k in j["kills"]] == ["cancelled", "cancelled"]
    assert h.call(lambda: svc.cancelled_workers) == 2

    res = CliRunner().invoke(main, [*base, "--cancels", "1", "--mode", "unbounded"])
    assert res.exit_code == 2 and "--mode (mode of a kill) does not apply to cancelling tasks" in res.output
    res = CliRunner().invoke(main, [*base, "--kills", "1"])  # a kill run on an asyncio node: refused, says why
    assert res.exit_code == 3 and "do not apply to an asyncio node" in res.output, res.output
    assert h.call(lambda: svc.cancelled_workers) == 2


def test_the_chaos_api_runs_a_cancel_experiment_and_refuses_a_kill_one(tmp_path: Path) -> None:
    # (no thread-leak check here: the web app's Socket.IO server keeps a daemon thread)
    h, svc = LoopHost(), Service()
    h.submit(svc.start()).result(10)
    store = HistoryStore(str(tmp_path / "history.sqlite3"), batch_interval=0.02)
    manager = AttachManager(store, change_interval=0.02)
    config = ObserverConfig(
        host="127.0.0.1",
        port=PORT,
        login_token="login-token-for-chaos-tests",
        allow_destructive_actions=True,
        attach=(AttachSpec("svc", f"127.0.0.1:{h.agent.port}", OP_TOKEN),),
        manager=manager,
        store=store,
        grants=parse_login_tokens("login-token-for-chaos-tests role=operator name=op"),
    )
    app, _ = create_app(config)
    app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"
    st = app.extensions["observer"]
    try:
        wait_for(lambda: st.model("svc").status == "up", what="attached")
        wait_for_workers(st.attachment("svc"), 4)
        c = app.test_client()
        assert c.get("/login?token=login-token-for-chaos-tests").status_code == 302
        headers = {"X-CSRF-Token": str(page_config(c)["csrf"]), "Origin": ORIGIN}
        resp = c.post("/api/chaos/experiments", json={"node": "svc", "confirm": True, "kill": {"kills": 1}},
                      headers=headers)  # fmt: skip
        assert resp.status_code == 400 and resp.get_json()["error"] == "not_applicable"
        assert "do not apply to an asyncio node" in resp.get_json()["message"]
        url = f"http://127.0.0.1:{svc.port}/health"
        body = {"node": "svc", "confirm": True, "settle_s": 1, "hypothesis": {"http": [url]},
                "cancel": {"names": ["worker-*"], "cancels": 2, "interval_ms": 50}}  # fmt: skip
        resp = c.post("/api/chaos/experiments", json=body, headers=headers)
        assert resp.status_code == 202, resp.get_json()
        exp_id = resp.get_json()["id"]

        def ended() -> dict[str, Any] | None:
            j = c.get(f"/api/chaos/experiments/{exp_id}").get_json()
            return j if j.get("status") not in (None, "running") else None

        j = wait_for(ended, timeout=20, what="the experiment's end")
        assert j["status"] == "completed", j
        assert [k["status"] for k in j["kills"]] == ["cancelled", "cancelled"]
        store.flush()
        rows = [r for r in c.get("/api/audit").get_json()["audit"] if r["action"] == "cancel"]
        assert sorted(r["target"] for r in rows) == sorted(k["pid"] for k in j["kills"])
        assert h.call(lambda: svc.cancelled_workers) == 2
    finally:
        st.close()
        manager.close()
        store.close()
        h.submit(svc.stop()).result(10)
        h.stop()

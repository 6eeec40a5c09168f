"""The observer attached to a mixed program (an actors node inside an aiohttp
application, ``agent.start(MixedSource(node))``): one node whose picture holds both the
supervision tree and the application's tasks; kill (a process) and cancel (a
task) both go through the gated, audited action route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

import agent
from agent.mixed import MixedSource
from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from tests.agent.aio_host import LoopHost
from tests.agent.conftest import OP_TOKEN
from tests.agent.test_asyncio_mixed import App
from tests.observer import wait_for
from tests.observer.test_app import PORT, csrf_headers

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mixed_web(tmp_path: Path) -> Iterator[tuple[App, object, HistoryStore]]:
    h = LoopHost(start_agent=False)
    app = App()
    h.submit(app.start()).result(10)
    assert app.node is not None
    h.agent = agent.start(MixedSource(app.node), "127.0.0.1:0", token=OP_TOKEN)
    store = HistoryStore(str(tmp_path / "history.sqlite3"), batch_interval=0.02)
    manager = AttachManager(store, change_interval=0.02)
    config = ObserverConfig(
        host="127.0.0.1",
        port=PORT,
        login_token="login-token-for-tests",
        allow_destructive_actions=True,
        attach=(AttachSpec("shop", f"127.0.0.1:{h.agent.port}", OP_TOKEN),),
        batch_interval=0.1,
        manager=manager,
        store=store,
    )
    flask_app, _ = create_app(config)
    flask_app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"
    try:
        yield app, flask_app, store
    finally:
        flask_app.extensions["observer"].close()
        manager.close()
        store.close()
        h.agent.stop()
        h.agent = None
        h.submit(app.stop()).result(10)
        h.stop()


def test_the_observer_shows_and_acts_on_both_kinds_in_one_node(mixed_web: tuple[App, object, HistoryStore]) -> None:
    _app, flask_app, store = mixed_web
    model = flask_app.extensions["observer"].model("shop")  # type: ignore[attr-defined]

    def named(name: str) -> str | None:
        return next((str(x["pid"]) for x in model.search(name) if x["name"] == name), None)

    wait_for(lambda: model.status == "up" and named("shop_sup") and named("app-bg"), what="both kinds in the picture")
    c = flask_app.test_client()  # type: ignore[attr-defined]
    assert c.get("/login?token=login-token-for-tests").status_code == 302
    (node,) = c.get("/api/overview").get_json()["nodes"]
    assert node["node"]["node_kind"] == "actors"
    assert {"kill", "cancel", "restart_child"} <= set(node["node"]["commands"])
    sup, bg = named("shop_sup"), named("app-bg")
    assert c.get(f"/api/nodes/shop/processes/{sup}").get_json()["process"]["kind"] == "supervisor"
    data = c.get(f"/api/nodes/shop/processes/{bg}").get_json()
    assert data["process"]["kind"] == "task" and data["inspect"]["waits_on"]["kind"] == "event"

    resp = c.post(f"/api/nodes/shop/processes/{bg}/cancel", json={"reason": "chaos"}, headers=csrf_headers(c))
    assert resp.status_code == 200 and resp.get_json()["result"]["cancelled"] is True, resp.get_json()
    wait_for(lambda: bg not in model, what="the cancelled task gone")
    with model.locked() as g:
        worker = next(p for p, r in g.nodes(data=True) if r.get("supervisor") == sup and r.get("child_id") == "idle")
    resp = c.post(f"/api/nodes/shop/processes/{worker}/kill", json={"reason": "kill"}, headers=csrf_headers(c))
    assert resp.status_code == 200, resp.get_json()
    wait_for(lambda: worker not in model, what="the killed worker gone")
    store.flush()
    actions = {r["action"]: r for r in c.get("/api/audit").get_json()["audit"] if r["action"] in ("kill", "cancel")}
    assert actions["cancel"]["target"] == bg and actions["kill"]["target"] == worker

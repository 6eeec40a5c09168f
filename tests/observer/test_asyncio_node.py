"""The observer attached to an asyncio node (a plain loop with its agent):
the kind is visible, the tree is there, cancel goes through the gated and
audited action route, and what the node does not support is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from tests.agent.aio_host import LoopHost
from tests.agent.conftest import OP_TOKEN, READ_TOKEN
from tests.observer import wait_for
from tests.observer.test_app import PORT, csrf_headers


async def forever() -> None:
    await asyncio.sleep(3600)


class AioWeb:
    def __init__(self, tmp: Path, *, allow_destructive: bool) -> None:
        self.host = LoopHost()
        self.host.spawn(forever, name="background-job")
        self.store = HistoryStore(str(tmp / "history.sqlite3"), batch_interval=0.02)
        self.manager = AttachManager(self.store, change_interval=0.02)
        self.config = ObserverConfig(
            host="127.0.0.1",
            port=PORT,
            login_token="login-token-for-tests",
            allow_destructive_actions=allow_destructive,
            attach=(
                AttachSpec("svc", f"127.0.0.1:{self.host.agent.port}", OP_TOKEN if allow_destructive else READ_TOKEN),
            ),
            batch_interval=0.1,
            manager=self.manager,
            store=self.store,
        )
        self.app, self.socketio = create_app(self.config)
        self.app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"
        self.model = self.app.extensions["observer"].model("svc")
        wait_for(lambda: self.model.status == "up" and self.job() is not None, what="attached with the job")

    def job(self) -> str | None:
        return next((str(h["pid"]) for h in self.model.search("background-job") if h["name"] == "background-job"), None)

    def client(self) -> FlaskClient:
        c = self.app.test_client()
        assert c.get(f"/login?token={self.config.login_token}").status_code == 302
        return c

    def close(self) -> None:
        self.app.extensions["observer"].close()
        self.manager.close()
        self.store.close()
        self.host.stop()


@pytest.fixture
def make_web(tmp_path: Path) -> Iterator[Callable[..., AioWeb]]:
    made: list[AioWeb] = []

    def make(**kw: Any) -> AioWeb:
        w = AioWeb(tmp_path, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


def test_an_asyncio_node_says_its_kind_and_shows_its_tasks(make_web: Callable[..., AioWeb]) -> None:
    web = make_web(allow_destructive=False)
    c = web.client()
    (node,) = c.get("/api/overview").get_json()["nodes"]
    assert node["node"]["node_kind"] == "asyncio"
    assert node["node"]["commands"] == ["ping", "snapshot", "info", "inspect", "processes"]  # read-only role
    job = web.job()
    data = c.get(f"/api/nodes/svc/processes/{job}").get_json()
    assert data["process"]["kind"] == "task" and data["process"]["label"] == "forever"
    assert data["inspect"]["waits_on"]["kind"] == "sleep"
    assert data["inspect"]["cancel_preview"]
    resp = c.post(f"/api/nodes/svc/processes/{job}/cancel", json={}, headers=csrf_headers(c))
    assert resp.status_code == 403 and resp.get_json()["error"] == "destructive_actions_disabled"


def test_cancel_from_the_observer_is_audited_and_unsupported_actions_are_refused(
    make_web: Callable[..., AioWeb],
) -> None:
    web = make_web(allow_destructive=True)
    c = web.client()
    (node,) = c.get("/api/overview").get_json()["nodes"]
    assert "cancel" in node["node"]["commands"] and "kill" not in node["node"]["commands"]
    job = web.job()
    resp = c.post(f"/api/nodes/svc/processes/{job}/suspend", json={}, headers=csrf_headers(c))
    assert resp.status_code == 400 and resp.get_json()["error"] == "unknown_command"
    resp = c.post(f"/api/nodes/svc/processes/{job}/cancel", json={"reason": "stuck"}, headers=csrf_headers(c))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["result"] == {"pid": job, "cancelled": True, "cancelling": 1}
    wait_for(lambda: job not in web.model, what="the cancelled task gone from the picture")
    web.store.flush()
    rows = [r for r in c.get("/api/audit").get_json()["audit"] if r["action"] == "cancel"]
    assert rows and rows[0]["target"] == job and rows[0]["ok"] == 1 and rows[0]["node"] == "svc"

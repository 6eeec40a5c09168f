"""Many nodes: an observer attached to real demo nodes in separate OS processes.

The observer here is the real app (Flask test client), with a real
AttachManager and SQLite store; the nodes are ``python -m
examples.cluster_node`` subprocesses, killed with SIGKILL and restarted on the
same port.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from observer import AttachManager, HistoryStore
from observer.app import AttachSpec, ObserverConfig, create_app
from observer.cli import main
from observer.cluster import load_config
from observer.permissions import Grant, parse_login_tokens
from tests.observer import READ_TOKEN, wait_for
from tests.observer.nodes import NodeProcess, free_port

PORT = 5000
ORIGIN = f"http://127.0.0.1:{PORT}"
OPERATOR_LOGIN = "operator-login-token-0123"
READER_LOGIN = "reader-login-token-0123"
KILLER_LOGIN = "killer-login-token-0123"


class Cluster:
    """The observer app attached to the given nodes (and accepting dial-ins when asked)."""

    def __init__(
        self,
        tmp: Path,
        nodes: dict[str, NodeProcess],
        *,
        specs: tuple[AttachSpec, ...] = (),
        agent_token: str = READ_TOKEN,
        **config: Any,
    ) -> None:
        self.store = HistoryStore(str(tmp / "history.sqlite3"), batch_interval=0.02)
        self.manager = AttachManager(self.store, change_interval=0.02, backoff_initial=0.2, backoff_max=1.0)
        grants = parse_login_tokens(
            f"{OPERATOR_LOGIN} role=operator name=op\n{READER_LOGIN} role=read name=reader\n"
            f"{KILLER_LOGIN} role=operator actions=inspect,kill name=killer\n"
        )
        self.config = ObserverConfig(
            host="127.0.0.1",
            port=PORT,
            login_token=OPERATOR_LOGIN,
            grants=grants,
            attach=tuple(AttachSpec(name, n.address, agent_token) for name, n in nodes.items()) + specs,
            agent_tokens={"*": agent_token},
            batch_interval=0.1,
            manager=self.manager,
            store=self.store,
            **config,
        )
        self.app, self.socketio = create_app(self.config)
        self.app.config["SERVER_NAME"] = f"127.0.0.1:{PORT}"
        self.state = self.app.extensions["observer"]

    def client(self, token: str = OPERATOR_LOGIN) -> FlaskClient:
        c = self.app.test_client()
        assert c.post("/login", data={"token": token}).status_code == 302
        return c

    def csrf(self, c: FlaskClient) -> dict[str, str]:
        html = c.get("/").get_data(as_text=True)
        m = re.search(r'"csrf":\s*"([^"]+)"', html)
        assert m
        return {"X-CSRF-Token": m.group(1), "Origin": ORIGIN}

    def health(self, c: FlaskClient) -> dict[str, dict[str, Any]]:
        return {n["name"]: n for n in c.get("/api/cluster").get_json()["nodes"]}

    def close(self) -> None:
        self.state.close()
        self.manager.close()
        self.store.close()


@pytest.fixture
def spawn() -> Iterator[Callable[..., dict[str, NodeProcess]]]:
    made: list[NodeProcess] = []

    def make(*names: str) -> dict[str, NodeProcess]:
        out = {}
        for name in names:
            out[name] = NodeProcess(seed=len(made) + 1)
            made.append(out[name])
        return out

    try:
        yield make
    finally:
        for n in made:
            n.stop()


def _tree_pids(tree: dict[str, Any]) -> set[str]:
    out = set()
    stack = [tree]
    while stack:
        t = stack.pop()
        if t.get("pid"):
            out.add(t["pid"])
        stack.extend(t.get("children") or [])
    return out


def test_three_nodes_one_killed_is_down_with_its_last_tree_then_reattached_with_its_new_tree(
    tmp_path: Path, spawn: Callable[..., dict[str, NodeProcess]]
) -> None:
    nodes = spawn("alpha", "beta", "gamma")
    cluster = Cluster(tmp_path, nodes)
    try:
        c = cluster.client()
        wait_for(lambda: all(h["status"] == "up" for h in cluster.health(c).values()), timeout=60, what="3 nodes up")
        health = cluster.health(c)
        assert set(health) == {"alpha", "beta", "gamma"}
        assert {h["os_pid"] for h in health.values()} == {n.os_pid for n in nodes.values()}
        wait_for(lambda: all((h["process_count"] or 0) > 10 for h in cluster.health(c).values()), what="trees")
        body = c.get("/api/cluster").get_json()
        assert body["totals"]["nodes"] == 3 and body["totals"]["up"] == 3
        assert body["totals"]["processes"] == sum(h["process_count"] for h in cluster.health(c).values())
        before = c.get("/api/nodes/beta/tree?layout=0").get_json()["tree"]
        assert before["stale"] is False
        old_pids = _tree_pids(before)
        assert len(old_pids) > 10
        old_os_pid = nodes["beta"].os_pid

        nodes["beta"].kill()
        wait_for(lambda: cluster.health(c)["beta"]["status"] == "down", timeout=30, what="beta down")
        others = cluster.health(c)
        assert others["alpha"]["status"] == "up" and others["gamma"]["status"] == "up"
        stale = c.get("/api/nodes/beta/tree?layout=0").get_json()["tree"]
        assert stale["stale"] is True  # the last-known tree, greyed by the browser
        assert _tree_pids(stale) == old_pids
        overview = {n["name"]: n for n in c.get("/api/overview").get_json()["nodes"]}
        assert overview["beta"]["status"] == "down" and overview["beta"]["down_since"]

        nodes["beta"].start()  # same port, a new OS process: a new tree
        assert nodes["beta"].os_pid != old_os_pid
        wait_for(
            lambda: (
                cluster.health(c)["beta"]["status"] == "up"
                and cluster.health(c)["beta"]["os_pid"] == nodes["beta"].os_pid
            ),
            timeout=60,
            what="beta re-attached",
        )
        fresh = c.get("/api/nodes/beta/tree?layout=0").get_json()["tree"]
        assert fresh["stale"] is False
        assert _tree_pids(fresh) and cluster.health(c)["beta"]["connects"] >= 2
        assert cluster.state.model("beta").summary()["snapshots"] >= 2  # resynced from a fresh snapshot
    finally:
        cluster.close()


def test_nodes_are_added_and_removed_at_run_time_by_operators_only_and_audited(
    tmp_path: Path, spawn: Callable[..., dict[str, NodeProcess]]
) -> None:
    nodes = spawn("alpha", "beta")
    cluster = Cluster(tmp_path, {"alpha": nodes["alpha"]})
    try:
        op = cluster.client()
        reader = cluster.client(READER_LOGIN)
        r = reader.post(
            "/api/nodes", json={"name": "beta", "address": nodes["beta"].address}, headers=cluster.csrf(reader)
        )
        assert r.status_code == 403 and r.get_json()["error"] == "not_permitted"
        r = op.post("/api/nodes", json={"name": "beta", "address": nodes["beta"].address})  # no CSRF header
        assert r.status_code == 403 and r.get_json()["error"] == "csrf"
        r = op.post("/api/nodes", json={"name": "bad name!", "address": "x"}, headers=cluster.csrf(op))
        assert r.status_code == 400
        r = op.post("/api/nodes", json={"name": "beta", "address": nodes["beta"].address}, headers=cluster.csrf(op))
        assert r.status_code == 200, r.get_json()
        wait_for(lambda: cluster.health(op).get("beta", {}).get("status") == "up", timeout=30, what="beta added")
        assert "beta" in re.findall(r'"nodes":\s*\[([^\]]*)\]', op.get("/").get_data(as_text=True))[0]
        r = op.post("/api/nodes", json={"name": "beta", "address": nodes["beta"].address}, headers=cluster.csrf(op))
        assert r.status_code == 409
        r = reader.delete("/api/nodes/beta", headers=cluster.csrf(reader))
        assert r.status_code == 403
        r = op.delete("/api/nodes/beta", headers=cluster.csrf(op))
        assert r.status_code == 200 and r.get_json()["ok"] is True
        assert "beta" not in cluster.health(op)
        assert op.get("/api/nodes/beta/tree").status_code == 404
        cluster.store.flush()
        audit = cluster.store.audits()
        rows = [(a["action"], a["node"], a["ok"], a["who"].split("/")[0]) for a in audit]
        assert ("add_node", "beta", 1, "op") in rows and ("remove_node", "beta", 1, "op") in rows
        assert ("add_node", "beta", 0, "reader") in rows and ("remove_node", "beta", 0, "reader") in rows
    finally:
        cluster.close()


def test_a_dial_out_agent_appears_like_any_other_node(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    cluster = Cluster(tmp_path, {}, listen_agents=listen)
    dialer = NodeProcess(OBSERVER_DIAL=listen, OBSERVER_DIAL_NAME="edge-1", seed=9)
    wrong = NodeProcess(
        OBSERVER_DIAL=listen, OBSERVER_DIAL_NAME="intruder", OBSERVER_AGENT_READ_TOKEN="not-the-right-token-000"
    )
    try:
        c = cluster.client()
        wait_for(lambda: cluster.health(c).get("edge-1", {}).get("status") == "up", timeout=60, what="dial-in up")
        h = cluster.health(c)["edge-1"]
        assert h["direction"] == "dial-in" and h["os_pid"] == dialer.os_pid
        wait_for(lambda: (cluster.health(c)["edge-1"]["process_count"] or 0) > 10, what="the dial-in tree")
        tree = c.get("/api/nodes/edge-1/tree?layout=0").get_json()["tree"]
        assert _tree_pids(tree)
        procs = c.get("/api/nodes/edge-1/processes?q=payments").get_json()
        assert procs["total"] >= 1, procs  # the JSON twins serve it like any node

        # the dialling node goes away: down with its last tree; it dials again from a new process
        dialer.kill()
        wait_for(lambda: cluster.health(c)["edge-1"]["status"] == "down", timeout=30, what="dial-in down")
        assert c.get("/api/nodes/edge-1/tree?layout=0").get_json()["tree"]["stale"] is True
        dialer.start()
        wait_for(
            lambda: (
                cluster.health(c)["edge-1"]["status"] == "up" and cluster.health(c)["edge-1"]["os_pid"] == dialer.os_pid
            ),
            timeout=60,
            what="dial-in back",
        )

        # the wrong token never attaches, and each refusal is audited
        assert "intruder" not in cluster.health(c)

        def refused() -> list[dict[str, Any]]:
            cluster.store.flush()
            return [a for a in cluster.store.audits() if a["action"] == "dial_in" and a["node"] == "intruder"]

        rows = wait_for(refused, timeout=30, what="the refused dial-in audited")
        assert rows[0]["ok"] == 0 and "auth_failed" in rows[0]["result"]["message"]
    finally:
        wrong.stop()
        dialer.stop()
        cluster.close()


def test_config_file_nodes_tokens_and_tls_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.token").write_text("token-a\n")
    (tmp_path / "ca.pem").write_text("not really a CA, only a file\n")
    monkeypatch.setenv("B_TOKEN", "token-b")
    cfg = tmp_path / "cluster.toml"
    cfg.write_text(
        '[tls]\nca = "ca.pem"\n\n'
        '[[nodes]]\nname = "a"\naddress = "10.0.0.1:4711"\ntoken_file = "a.token"\ntls = true\n\n'
        '[[nodes]]\naddress = "10.0.0.2:4711"\ntoken_env = "B_TOKEN"\n'
    )
    loaded = load_config(cfg)
    assert [(n.name, n.address, n.token) for n in loaded.nodes] == [
        ("a", "10.0.0.1:4711", "token-a"),
        ("10.0.0.2:4711", "10.0.0.2:4711", "token-b"),
    ]
    assert loaded.nodes[0].tls is not None and loaded.nodes[0].tls.ca == str(tmp_path / "ca.pem")
    assert loaded.nodes[1].tls is None
    for bad, msg in [
        ('[[nodes]]\naddress = "h:1"\ntoken = "inline"\n', "tokens are not written in the config"),
        ('[[nodes]]\naddress = "nope"\ntoken_env = "B_TOKEN"\n', "HOST:PORT"),
        ('[[nodes]]\naddress = "h:1"\n', "token_file or token_env is required"),
        ('[[nodes]]\naddress = "h:1"\ntoken_env = "UNSET_VAR_X"\n', "is not set"),
        ('[[nodes]]\naddress = "h:1"\ntoken_env = "B_TOKEN"\nport = 3\n', "unknown key"),
        ('[tls]\nca_file = "ca.pem"\ncert_file = "ca.pem"\n', "renamed key.*ca_file is now ca, cert_file is now cert"),
        ('[tls]\ncertfile = "ca.pem"\n', "unknown key"),
        ("[[nodes]\n", "not valid TOML"),
        (
            '[[nodes]]\nname="x"\naddress = "h:1"\ntoken_env = "B_TOKEN"\n[[nodes]]\nname="x"\naddress = "h:2"\n'
            'token_env = "B_TOKEN"\n',
            "used twice",
        ),
    ]:
        cfg.write_text(bad)
        with pytest.raises(ValueError, match=msg):
            load_config(cfg)


def test_login_token_file_grants() -> None:
    grants = parse_login_tokens("# ops\nAAAAAAAA role=operator actions=kill,suspend name=alice\nBBBBBBBB role=read\n")
    assert grants[0] == Grant("AAAAAAAA", "operator", frozenset({"kill", "suspend"}), "alice")
    assert grants[1].role == "read" and grants[1].actions == frozenset({"inspect"})
    every = frozenset({"inspect", "kill", "suspend", "send", "chaos", "trace"})
    assert parse_login_tokens("CCCCCCCCCC\n")[0].actions == every
    for bad, msg in [
        ("AAAAAAAA role=read actions=kill", "read-only token cannot have kill"),
        ("AAAAAAAA actions=nuke", "unknown action"),
        ("AAAAAAAA role=admin", "role must be"),
        ("AAAAAAAA color=red", "expected role="),
        ("short", "too short"),
        ("AAAAAAAA\nAAAAAAAA", "twice"),
        ("# nothing\n", "no login token"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_login_tokens(bad)


def test_serve_rejects_bad_cluster_options_with_clear_errors(tmp_path: Path) -> None:
    env = {"OBSERVER_NODE_TOKEN": "", "OBSERVER_NODE_TOKEN_FILE": ""}
    cfg = tmp_path / "cluster.toml"
    cfg.write_text('[[nodes]]\naddress = "127.0.0.1:1"\ntoken = "inline-secret"\n')
    res = CliRunner().invoke(main, ["serve", "--config", str(cfg), "--no-browser"], env=env)
    assert res.exit_code == 2 and "use token_file or token_env" in res.output
    assert "inline-secret" not in res.output
    res = CliRunner().invoke(main, ["serve", "--no-browser"], env=env)
    assert res.exit_code == 2 and "nothing to observe" in res.output
    res = CliRunner().invoke(main, ["serve", "--listen-agents", "127.0.0.1:0", "--no-browser"], env=env)
    assert res.exit_code == 2 and "needs node tokens" in res.output
    res = CliRunner().invoke(main, ["serve", "--listen-agents", "nowhere", "--no-browser"], env=env)
    assert res.exit_code == 2 and "HOST:PORT" in res.output
    env["OBSERVER_NODE_TOKEN"] = "t" * 20
    res = CliRunner().invoke(
        main, ["serve", "--attach", "127.0.0.1:1", "--message-queue", "amqp://x", "--no-browser"], env=env
    )
    assert res.exit_code == 2 and "redis://" in res.output
    res = CliRunner().invoke(
        main, ["serve", "--attach", "127.0.0.1:1", "--message-queue", "redis://:pw@h:6379/0", "--no-browser"], env=env
    )
    assert res.exit_code == 2 and "OBSERVER_MESSAGE_QUEUE" in res.output
    res = CliRunner().invoke(
        main, ["serve", "--attach", "x=127.0.0.1:1", "--attach", "x=127.0.0.1:2", "--no-browser"], env=env
    )
    assert res.exit_code == 2 and "unique" in res.output


def test_a_dialling_agent_backs_off_until_the_observer_listens_and_again_after_it_restarts(tmp_path: Path) -> None:
    import agent
    from tests.agent.conftest import Host

    port = free_port()
    host = Host(token="op-token-for-dial-test-0123", read_token=READ_TOKEN)
    dialer = agent.dial(host.agent, f"127.0.0.1:{port}", name="late", backoff_initial=0.05, backoff_max=0.4)
    cluster: Cluster | None = None
    try:
        wait_for(lambda: dialer.attempts >= 4, timeout=30, what="dial attempts while nobody listens")
        assert dialer.last_error and "ConnectionRefused" in dialer.last_error and dialer.sessions == 0
        (tmp_path / "1").mkdir()
        cluster = Cluster(tmp_path / "1", {}, listen_agents=f"127.0.0.1:{port}")
        c = cluster.client()
        wait_for(lambda: cluster.health(c).get("late", {}).get("status") == "up", timeout=30, what="attached")
        assert dialer.connected and dialer.sessions == 0
        cluster.close()  # the observer goes away: the agent dials again, with backoff
        cluster = None
        wait_for(lambda: not dialer.connected and dialer.sessions == 1, timeout=30, what="the agent noticed")
        (tmp_path / "2").mkdir()
        cluster = Cluster(tmp_path / "2", {}, listen_agents=f"127.0.0.1:{port}")
        c = cluster.client()
        wait_for(lambda: cluster.health(c).get("late", {}).get("status") == "up", timeout=30, what="re-attached")
        assert dialer.connected and dialer.attempts >= 6
    finally:
        dialer.stop()
        if cluster is not None:
            cluster.close()
        host.stop()

"""Secure links: TLS (and mutual TLS) on the agent link with a throw-away CA,
HTTPS on the browser side, tokens and per-action permissions; every refusal
audited. Real agents on loopback, the real app, real certificates (openssl)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from click.testing import CliRunner

from examples.demo_system import PAYMENTS, build
from observer.app import AttachSpec
from observer.cli import main
from observer.cluster import TlsSettings, agent_ssl_context, load_config
from tests.agent.conftest import Host
from tests.observer import READ_TOKEN, TOKEN, wait_for
from tests.observer.certs import Pki, make_pki
from tests.observer.nodes import NodeProcess, clean_env, free_port, login, read_line, stop_process
from tests.observer.test_cluster import KILLER_LOGIN, OPERATOR_LOGIN, READER_LOGIN, Cluster


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for h in made:
        h.stop()


def _host(hosts: list[Host], **tls: Any) -> Host:
    h = Host(token=TOKEN, read_token=READ_TOKEN, **tls)
    hosts.append(h)
    return h


def _refusals(cluster: Cluster, action: str, node: str | None = None) -> list[dict[str, Any]]:
    cluster.store.flush()
    return [a for a in cluster.store.audits() if a["action"] == action and a["ok"] == 0 and node in (None, a["node"])]


def _spec(name: str, h: Host, tls: TlsSettings | None, token: str = READ_TOKEN) -> AttachSpec:
    ctx = agent_ssl_context(tls) if tls is not None else None
    return AttachSpec(name, f"127.0.0.1:{h.agent.port}", token, ctx)


def test_agent_links_over_tls_and_mutual_tls_attach_and_bad_certificates_are_refused_and_audited(
    tmp_path: Path, pki: Pki, hosts: list[Host]
) -> None:
    tls = _host(hosts, tls_cert=pki.server_cert, tls_key=pki.server_key)
    mtls = _host(hosts, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_ca=pki.ca)
    expired = _host(hosts, tls_cert=pki.expired_cert, tls_key=pki.expired_key)
    rogue = _host(hosts, tls_cert=pki.rogue_cert, tls_key=pki.rogue_key)
    # the config file path: [tls] defaults with our client certificate
    cfg = tmp_path / "cluster.toml"
    (tmp_path / "token").write_text(READ_TOKEN)
    cfg.write_text(
        f'[tls]\nca = "{pki.ca}"\ncert = "{pki.client_cert}"\nkey = "{pki.client_key}"\n\n'
        f'[[nodes]]\nname = "mtls"\naddress = "127.0.0.1:{mtls.agent.port}"\ntoken_file = "token"\ntls = true\n'
    )
    node = load_config(cfg).nodes[0]
    assert node.tls is not None
    specs = (
        _spec("tls", tls, TlsSettings(ca=pki.ca)),
        AttachSpec(node.name, node.address, node.token, agent_ssl_context(node.tls)),
        _spec("mtls-nocert", mtls, TlsSettings(ca=pki.ca)),
        _spec("expired", expired, TlsSettings(ca=pki.ca)),
        _spec("rogue", rogue, TlsSettings(ca=pki.ca)),
        _spec("plain-to-tls", tls, None),
        _spec("wrong-token", tls, TlsSettings(ca=pki.ca), token="not-the-agent-token-0000"),
    )
    cluster = Cluster(tmp_path, {}, specs=specs)
    try:
        c = cluster.client()
        wait_for(
            lambda: cluster.health(c)["tls"]["status"] == "up" and cluster.health(c)["mtls"]["status"] == "up",
            timeout=30,
            what="TLS and mutual-TLS nodes up",
        )
        assert cluster.health(c)["mtls"]["tls"] is True
        for name, why in [
            ("expired", "certificate has expired"),
            ("rogue", "certificate verify failed"),
            ("wrong-token", "auth_failed"),
            ("mtls-nocert", "refused client certificate"),
        ]:
            rows = wait_for(lambda n=name: _refusals(cluster, "attach", n), timeout=30, what=f"{name} audited")
            assert why in rows[0]["result"]["message"], (name, rows[0])
            assert cluster.health(c)[name]["status"] != "up"
        assert cluster.health(c)["plain-to-tls"]["status"] != "up"  # no hello over plain TCP: it times out
        # refused once per distinct error, not once per retry
        assert len(_refusals(cluster, "attach", "expired")) == 1
    finally:
        cluster.close()


def test_read_only_and_narrow_tokens_are_refused_and_audited_and_buttons_follow_the_grant(
    tmp_path: Path, hosts: list[Host]
) -> None:
    h = _host(hosts)
    demo = h.run_async(build(h.node, seed=7, traffic=False))
    cluster = Cluster(
        tmp_path, {}, specs=(_spec("demo", h, None, token=TOKEN),), agent_token=TOKEN, allow_destructive_actions=True
    )
    try:
        model = cluster.state.model("demo")
        wait_for(lambda: model.status == "up" and PAYMENTS in model.names(), timeout=30, what="attached")
        pid = model.names()[PAYMENTS]
        url = f"/api/nodes/demo/processes/{pid}"

        reader = cluster.client(READER_LOGIN)
        cfg = _config(reader)
        assert cfg["role"] == "read" and cfg["actions"] == ["inspect"] and cfg["allow_destructive"] is False
        r = reader.post(f"{url}/kill", json={"reason": "kill"}, headers=cluster.csrf(reader))
        assert r.status_code == 403 and r.get_json()["error"] == "not_permitted"
        assert "kill" in r.get_json()["message"]
        assert reader.get(url).get_json()["inspect"] is not None  # read-only may inspect
        r = reader.post(f"{url}/flight_recorder", json={"on": True}, headers=cluster.csrf(reader))
        assert r.status_code == 403 and r.get_json()["error"] == "not_permitted"
        assert _refusals(cluster, "flight_recorder", "demo")[0]["who"].startswith("reader/")

        killer = cluster.client(KILLER_LOGIN)
        assert _config(killer)["actions"] == ["inspect", "kill"]
        r = killer.post(f"{url}/suspend", json={}, headers=cluster.csrf(killer))
        assert r.status_code == 403 and r.get_json()["error"] == "not_permitted"
        assert model.names()[PAYMENTS] == pid  # nothing was killed or suspended so far

        r = killer.post(f"{url}/kill", json={"reason": "kill"}, headers=cluster.csrf(killer))
        assert r.status_code == 200, r.get_json()
        wait_for(lambda: model.names().get(PAYMENTS) not in (None, pid), timeout=30, what="payments restarted")

        wrong = cluster.app.test_client()
        assert wrong.get("/login?token=not-a-login-token").status_code == 403

        kills = _refusals(cluster, "kill", "demo")
        assert kills and kills[0]["who"].startswith("reader/") and kills[0]["result"]["error"] == "not_permitted"
        assert _refusals(cluster, "suspend", "demo")[0]["who"].startswith("killer/")
        assert _refusals(cluster, "login")
        cluster.store.flush()
        done = [a for a in cluster.store.audits() if a["action"] == "kill" and a["ok"] == 1]
        assert done and done[0]["who"].startswith("killer/")

        # the audit page and its exports
        op = cluster.client(OPERATOR_LOGIN)
        assert 'data-page="audit"' in op.get("/audit").get_data(as_text=True)
        csv_text = op.get("/api/audit/export?format=csv").get_data(as_text=True)
        assert csv_text.splitlines()[0].startswith("id,time,who")
        assert "not_permitted" in csv_text and "reader/" in csv_text
        r = op.get("/api/audit/export?format=json&node=demo")
        assert "attachment" in r.headers["Content-Disposition"]
        assert {a["action"] for a in r.get_json()["audit"]} >= {"kill", "suspend"}
        assert op.get("/api/audit/export?format=xml").status_code == 400
    finally:
        cluster.close()
        h.run_async(demo.stop())


def _config(client: Any) -> dict[str, Any]:
    import json

    html = client.get("/").get_data(as_text=True)
    m = re.search(r'<script type="application/json" id="config">(.*?)</script>', html, re.S)
    assert m
    cfg: dict[str, Any] = json.loads(m.group(1))
    return cfg


def test_agents_dialling_in_over_mutual_tls_and_without_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    from observer.dialin import server_ssl_context

    listen = f"127.0.0.1:{free_port()}"
    ctx = server_ssl_context(pki.server_cert, pki.server_key, pki.ca)
    cluster = Cluster(tmp_path, {}, listen_agents=listen, listen_agents_ssl=ctx)
    good = NodeProcess(
        OBSERVER_DIAL=listen,
        OBSERVER_DIAL_NAME="edge-tls",
        OBSERVER_DIAL_TLS_CA=pki.ca,
        OBSERVER_DIAL_TLS_CERT=pki.client_cert,
        OBSERVER_DIAL_TLS_KEY=pki.client_key,
    )
    nocert = NodeProcess(OBSERVER_DIAL=listen, OBSERVER_DIAL_NAME="edge-nocert", OBSERVER_DIAL_TLS_CA=pki.ca)
    try:
        c = cluster.client()
        wait_for(lambda: cluster.health(c).get("edge-tls", {}).get("status") == "up", timeout=60, what="mTLS dial-in")
        rows = wait_for(lambda: _refusals(cluster, "dial_in"), timeout=30, what="the refused dial-in audited")
        assert "TLS handshake failed" in rows[0]["result"]["message"]
        assert "edge-nocert" not in cluster.health(c)
    finally:
        nocert.stop()
        good.stop()
        cluster.close()


def test_plain_http_on_a_non_loopback_address_is_refused_unless_explicit(tmp_path: Path, pki: Pki) -> None:
    env = {"OBSERVER_NODE_TOKEN": "x" * 20}
    res = CliRunner().invoke(main, ["serve", "--attach", "127.0.0.1:1", "--host", "0.0.0.0", "--no-browser"], env=env)
    assert res.exit_code == 2 and "refusing plain HTTP" in res.output
    res = CliRunner().invoke(
        main, ["serve", "--attach", "127.0.0.1:1", "--tls-cert", pki.server_cert, "--no-browser"], env=env
    )
    assert res.exit_code == 2 and "go together" in res.output


def test_https_serving_with_a_login_token_file(tmp_path: Path, pki: Pki) -> None:
    node = NodeProcess()
    tokens = tmp_path / "logins"
    tokens.write_text(f"{OPERATOR_LOGIN} role=operator name=op\n{READER_LOGIN} role=read name=reader\n")
    agent_tokens = tmp_path / "agents"
    agent_tokens.write_text(READ_TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "observer", "serve", "--attach", f"n1={node.address}", "--node-token-file",
         str(agent_tokens), "--login-token-file", str(tokens), "--port", "0", "--no-browser",
         "--tls-cert", pki.server_cert, "--tls-key", pki.server_key],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        m, _ = read_line(proc.stdout, re.compile(r"open (https://127\.0\.0\.1:\d+)/login"), 60, "the HTTPS URL")
        base = m.group(1)
        http = requests.Session()
        http.verify = pki.ca
        http.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment wins over verify
        csrf = login(http, base, READER_LOGIN)
        assert http.cookies and all(c.secure for c in http.cookies)
        wait_for(lambda: http.get(f"{base}/api/cluster").json()["nodes"][0]["status"] == "up", timeout=60, what="up")
        r = http.post(f"{base}/api/nodes", json={"name": "x", "address": "127.0.0.1:9"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403 and r.json()["error"] == "not_permitted"
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{base}/login", timeout=10)  # not trusting our CA: no connection
        # live updates over wss://, with the same session
        live = socketio.Client(http_session=http)
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        live.connect(base, headers={"Cookie": cookie}, namespaces=["/live"], transports=["websocket"])
        try:
            ack = live.call("subscribe", {"node": "n1", "view": "tree"}, namespace="/live", timeout=10)
            assert ack["ok"] and ack["status"] == "up"
        finally:
            live.disconnect()
    finally:
        stop_process(proc)
        node.stop()

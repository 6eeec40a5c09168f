"""Prometheus metrics (observer/metrics.py, docs/metrics.md).

In process: the collector against the demo tree on a real node and agent
(the values are the model's), the access rules of ``/metrics``, and the
bounded label set of crashes by signature over a real SQLite history.

End to end: a real ``observer serve`` attached to a real demo node, and a
real Prometheus (Debian's ``prometheus``, started here on loopback with its
own storage) scraping it with the bearer token; the test reads the series
back through Prometheus's HTTP API and compares them with the observer's JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from examples.demo_system import PAYMENTS, PAYMENTS_SUP
from observer import HistoryStore, __version__
from observer.app import ObserverConfig, create_app
from observer.metrics import OTHER, ObserverCollector, install
from tests.observer import TOKEN, wait_for
from tests.observer.nodes import NodeProcess, clean_env, free_port, login, read_line, stop_process
from tests.observer.test_app import Web

SCRAPE_TOKEN = "scrape-token-for-tests-0123456789"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = Web(tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_the_collector_reads_the_demo_tree_from_the_model(web: Web) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ObserverCollector(web.state))  # type: ignore[arg-type]
    samples = _samples(generate_latest(registry).decode())
    summary = web.model.summary()
    assert _value(samples, "observer_node_up", node="demo") == 1
    link = {s: _value(samples, "observer_agent_link_state", node="demo", observer_agent_link_state=s) for s in
            ("connecting", "syncing", "up", "down")}  # fmt: skip
    assert link == {"connecting": 0, "syncing": 0, "up": 1, "down": 0}
    assert _value(samples, "observer_node_processes", node="demo") == summary["process_count"] > 10
    assert _value(samples, "observer_node_supervisors", node="demo") == summary["supervisor_count"]
    kids = web.model.process(web.pid(PAYMENTS_SUP))
    assert kids is not None
    assert _value(samples, "observer_supervisor_children", node="demo", supervisor=PAYMENTS_SUP) == len(
        kids["children"]
    )
    assert _value(samples, "observer_supervisor_child_restarts_total", node="demo", supervisor=PAYMENTS_SUP) == 0
    assert _value(samples, "observer_info", version=__version__) == 1


def test_metrics_are_off_by_default_and_need_the_bearer_token(web: Web) -> None:
    anonymous = web.client(login=False)
    assert anonymous.get("/metrics").status_code == 302  # an ordinary page: login first
    assert web.client().get("/metrics").status_code == 404  # no such page for a logged-in user either
    assert install(web.app, web.state, token=SCRAPE_TOKEN) is None
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.client().get("/metrics").status_code == 401  # a browser session is not a scrape token
    r = anonymous.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert 'observer_node_up{node="demo"} 1.0' in r.get_data(as_text=True)
    assert anonymous.get("/").status_code == 302  # the rest of the app is unchanged


def test_a_separate_listener_serves_the_same_metrics(web: Web) -> None:
    server = install(web.app, web.state, token=SCRAPE_TOKEN, listen="127.0.0.1:0")
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        assert requests.get(url, timeout=10).status_code == 401
        r = requests.get(url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=10)
        assert r.status_code == 200 and 'observer_node_processes{node="demo"}' in r.text
    finally:
        server.close()


def test_crash_signatures_beyond_the_top_n_add_up_under_other(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "h.sqlite3"), batch_interval=0.01)
    app, _ = create_app(ObserverConfig(store=store, login_token="x" * 24))
    state = app.extensions["observer"]
    try:
        seq = 0
        for i in range(8):  # signature i crashes i + 1 times
            for _ in range(i + 1):
                seq += 1
                report = {"exception": f"E{i}Error('boom')", "reason": "error", "pid": f"<0.{seq}.0>", "time": 1e9}
                store.record(
                    "n1",
                    {"t": "ev", "ev": "exit", "seq": seq, "pid": f"<0.{seq}.0>", "reason": "error", "report": report},
                )
        assert store.flush()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ObserverCollector(state, top_signatures=3))
        samples = _samples(generate_latest(registry).decode())
        sigs = {dict(k[1])["signature"]: v for k, v in samples.items() if k[0] == "observer_crashes_by_signature_total"}
        assert sigs == {
            "E7Error('boom') at ?": 8,
            "E6Error('boom') at ?": 7,
            "E5Error('boom') at ?": 6,
            OTHER: 1 + 2 + 3 + 4 + 5,
        }
    finally:
        state.close()
        store.close()


# -- a real Prometheus ----------------------------------------------------------------------------------------


def _prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("prometheus is not installed (make prometheus)", pytrace=False)
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return path


class Prometheus:
    """``prometheus`` on a free loopback port with its own storage, scraping one target every second."""

    def __init__(self, binary: str, tmp: Path, target: str, token_file: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: observer\n"
            "    metrics_path: /metrics\n"
            f"    authorization:\n      type: Bearer\n      credentials_file: {token_file}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp,
        )  # fmt: skip
        wait_for(self._ready, timeout=60, what="prometheus ready")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "prometheus exited (see prometheus.log)"
        try:
            return requests.get(f"{self.base}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def query(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        r = requests.get(f"{self.base}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        data = r.json()["data"]["result"]
        return {
            tuple(sorted((k, v) for k, v in d["metric"].items() if k not in {"job", "instance"})): float(d["value"][1])
            for d in data
        }

    def one(self, promql: str) -> float | None:
        found = self.query(promql)
        return next(iter(found.values())) if len(found) == 1 else None

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def test_a_real_prometheus_scrapes_the_demo_series_with_the_right_values(tmp_path: Path) -> None:
    binary = _prometheus()
    node = NodeProcess(traffic=False, seed=2)
    (tmp_path / "node_token").write_text(TOKEN)
    (tmp_path / "scrape_token").write_text(SCRAPE_TOKEN)
    (tmp_path / "login").write_text("login-token-for-the-metrics-test-0123")
    web_port = free_port()
    observer = subprocess.Popen(
        [sys.executable, "-m", "observer", "serve", "--attach", f"demo={node.address}",
         "--node-token-file", str(tmp_path / "node_token"), "--login-token-file", str(tmp_path / "login"),
         "--metrics-token-file", str(tmp_path / "scrape_token"), "--allow-destructive-actions",
         "--port", str(web_port), "--no-browser", "--db", str(tmp_path / "history.sqlite3")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(),
    )  # fmt: skip
    prom: Prometheus | None = None
    try:
        assert observer.stdout is not None
        read_line(observer.stdout, re.compile(r"open http://127\.0\.0\.1:\d+/login"), 60, "the observer URL")
        base = f"http://127.0.0.1:{web_port}"
        http = requests.Session()
        csrf = login(http, base, "login-token-for-the-metrics-test-0123")

        def api(path: str) -> Any:
            r = http.get(base + path, timeout=10)
            r.raise_for_status()
            return r.json()

        wait_for(lambda: api("/api/nodes/demo/processes?limit=1")["total"] > 10, timeout=60, what="the node attached")
        total = api("/api/nodes/demo/processes?limit=1")["total"]
        sup = api(f"/api/nodes/demo/processes/{PAYMENTS_SUP}")
        prom = Prometheus(binary, tmp_path, f"127.0.0.1:{web_port}", tmp_path / "scrape_token")
        wait_for(lambda: prom.one('up{job="observer"}') == 1, timeout=60, what="a successful scrape")
        assert prom.one('observer_node_up{node="demo"}') == 1
        assert prom.one('observer_agent_link_state{node="demo",observer_agent_link_state="up"}') == 1
        assert prom.one('observer_node_processes{node="demo"}') == total
        assert prom.one(f'observer_supervisor_children{{node="demo",supervisor="{PAYMENTS_SUP}"}}') == len(
            sup["process"]["children"]
        )
        assert prom.one(f'observer_supervisor_child_restarts_total{{supervisor="{PAYMENTS_SUP}"}}') == 0

        # a kill through the UI's API: the restart and the crash show up in Prometheus
        r = http.post(f"{base}/api/nodes/demo/processes/{PAYMENTS}/kill", json={"reason": "kill"},
                      headers={"X-CSRF-Token": csrf}, timeout=20)  # fmt: skip
        assert r.status_code == 200, r.text
        sup_pid = sup["pid"]

        def restarts() -> int:  # rest_for_one: the killed child and those started after it
            rows = api(f"/api/nodes/demo/processes?supervisor={sup_pid}&limit=100")["rows"]
            return sum(r["restarts"] or 0 for r in rows)

        wait_for(restarts, timeout=30, what="the restart in the observer")

        # rest_for_one restarts arrive one by one: the observer may count 1 before 2, so the
        # scrape is compared with the observer's count read afresh each time
        def scraped() -> bool:
            n = restarts()
            return n > 0 and prom.one(f'observer_supervisor_child_restarts_total{{supervisor="{PAYMENTS_SUP}"}}') == n

        wait_for(scraped, timeout=60, what="the restart scraped")
        groups = wait_for(lambda: api("/api/crashes")["groups"], timeout=30, what="the crash stored")
        assert [(g["signature"], g["count"]) for g in groups] == [("exit killed of PaymentWorker", 1)]
        wait_for(
            lambda: prom.query('observer_crashes_by_signature_total{node="demo"}')
            == {(("__name__", "observer_crashes_by_signature_total"), ("node", "demo"),
                 ("signature", "exit killed of PaymentWorker")): 1.0},
            timeout=60,
            what="the crash scraped",
        )  # fmt: skip
        assert prom.one('observer_node_processes{node="demo"}') == api("/api/nodes/demo/processes?limit=1")["total"]
        assert prom.one('observer_node_snapshots_total{node="demo"}') == 1
    finally:
        if prom is not None:
            prom.stop()
        stop_process(observer)
        node.stop()


def test_the_docs_and_the_grafana_dashboard_name_only_series_the_collector_exports(web: Web) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ObserverCollector(web.state))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    exported = set(re.findall(r"^# TYPE (\w+) ", text, re.M))  # counters with their _total
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(observer_\w+)` \|", doc, re.M))
    assert documented == exported
    dashboard = json.loads((root / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\b(observer_\w+)\b", e)}
    assert used and used <= exported, used - exported

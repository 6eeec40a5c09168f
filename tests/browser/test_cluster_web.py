"""The cluster in a real browser: ``observer serve`` attached to two node
processes; the overview's cluster table follows a node going down (its tree
greyed) and coming back; operators remove and add nodes from the page, readers
see no such controls; the audit page lists it all."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ROOT, login_with_form
from tests.observer import READ_TOKEN
from tests.observer.nodes import NodeProcess, clean_env, read_line, stop_process

OPERATOR = "browser-operator-token-0123"
READER = "browser-reader-token-0123"


class ClusterServer:
    def __init__(self, tmp: Path) -> None:
        self.nodes = {"a": NodeProcess(seed=1), "b": NodeProcess(seed=2)}
        (tmp / "logins").write_text(f"{OPERATOR} role=operator name=op\n{READER} role=read name=reader\n")
        (tmp / "agents").write_text(READ_TOKEN)
        argv = [sys.executable, "-m", "observer", "serve", "--port", "0", "--no-browser", "--node-token-file",
                str(tmp / "agents"), "--login-token-file", str(tmp / "logins")]  # fmt: skip
        for name, n in self.nodes.items():
            argv += ["--attach", f"{name}={n.address}"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        assert self.proc.stdout is not None
        m, _ = read_line(self.proc.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 90, "the URL")
        self.base = m.group(1)

    def stop(self) -> None:
        stop_process(self.proc)
        for n in self.nodes.values():
            n.stop()


@pytest.fixture
def cluster_server(browser: Any, tmp_path: Path) -> Iterator[ClusterServer]:
    s = ClusterServer(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _page(browser: Any, server: ClusterServer, token: str) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = ctx.new_page()
    page.js_errors = []
    page.on("pageerror", lambda e: page.js_errors.append(str(e)))
    login_with_form(page, server.base, token)
    return page


def _row(page: Any, node: str, status: str, timeout: float = 60_000) -> None:
    page.wait_for_selector(f'#cluster-table tr[data-node="{node}"][data-status="{status}"]', timeout=timeout)


def test_cluster_table_follows_a_node_down_and_back_and_operators_manage_nodes(
    browser: Any, cluster_server: ClusterServer
) -> None:
    page = _page(browser, cluster_server, OPERATOR)
    try:
        _row(page, "a", "up")
        _row(page, "b", "up")
        b = cluster_server.nodes["b"]
        b.kill()
        _row(page, "b", "down")
        assert page.get_attribute('#cluster-table tr[data-node="a"]', "data-status") == "up"
        page.goto(f"{cluster_server.base}/nodes/b/tree")
        page.wait_for_selector(".stale", timeout=30_000)  # the last-known tree, greyed
        assert page.locator("g[data-pid]").count() > 10
        b.start()
        page.goto(f"{cluster_server.base}/")
        _row(page, "b", "up")

        page.once("dialog", lambda d: d.accept())
        page.click('#cluster-table button[data-remove="b"]')
        page.wait_for_selector('#cluster-table tr[data-node="b"]', state="detached", timeout=30_000)
        page.fill('#add-node input[name="name"]', "b2")
        page.fill('#add-node input[name="address"]', b.address)
        page.click('#add-node button[type="submit"]')
        _row(page, "b2", "up")

        page.goto(f"{cluster_server.base}/audit")
        page.wait_for_selector('#audit-table tr[data-action="add_node"][data-ok="1"]', timeout=30_000)
        assert page.locator('#audit-table tr[data-action="remove_node"][data-ok="1"]').count() == 1
        assert "format=csv" in (page.get_attribute("#audit-csv", "href") or "")
        assert not page.js_errors, page.js_errors
    finally:
        page.context.close()


def test_readers_get_no_node_controls_and_no_action_buttons(browser: Any, cluster_server: ClusterServer) -> None:
    page = _page(browser, cluster_server, READER)
    try:
        _row(page, "a", "up")
        assert page.locator("#add-node").count() == 0
        assert page.locator("[data-remove]").count() == 0
        r = page.request.post(
            f"{cluster_server.base}/api/nodes",
            data={"name": "x", "address": "127.0.0.1:9"},
            headers={"X-CSRF-Token": page.evaluate("window.observer.ctx.config.csrf")},
        )
        assert r.status == 403 and r.json()["error"] == "not_permitted"
        page.goto(f"{cluster_server.base}/audit")
        page.wait_for_selector('#audit-table tr[data-action="add_node"][data-ok="0"]', timeout=30_000)
        assert not page.js_errors, page.js_errors
    finally:
        page.context.close()

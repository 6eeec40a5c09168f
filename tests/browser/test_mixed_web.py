"""A mixed program in a real browser: an unmodified asyncio program with an
``actors`` node inside (``tests/browser/mixed_app.py``) started by the
launcher (``python -m agent run -- python -m tests.browser.mixed_app``), a
real ``observer serve --attach`` process, and headless Chromium. Once the
agent meets the node it shows it as a mixed node: the supervision tree and
the program's other tasks (the loop, a TaskGroup of pollers) in one tree,
and the inspector answers for either kind."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import OP_TOKEN
from tests.browser.conftest import ROOT, login_with_form
from tests.observer import wait_for
from tests.observer.nodes import clean_env, read_line, stop_process

OPERATOR = "mixed-browser-operator-0123"
NODE = "billing"


class Stack:
    """The launcher running the mixed program, and ``observer serve`` attached to its agent."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "agent-token").write_text(OP_TOKEN)
        (tmp / "logins").write_text(f"{OPERATOR} role=operator name=op\n")
        addr_file = tmp / "agent-address"
        cmd = [sys.executable, "-m", "agent", "run", "--bind", "127.0.0.1:0", "--token-file", str(tmp / "agent-token")]
        cmd += ["--address-file", str(addr_file), "--", sys.executable, "-m", "tests.browser.mixed_app"]
        pipe = subprocess.PIPE
        self.app = subprocess.Popen(cmd, cwd=ROOT, stdin=pipe, stdout=pipe, stderr=subprocess.DEVNULL, env=clean_env())
        self.serve: subprocess.Popen[bytes] | None = None
        assert self.app.stdout is not None
        read_line(self.app.stdout, re.compile(r"ready"), 60, "the program")
        address = wait_for(lambda: addr_file.exists() and addr_file.read_text(), timeout=20, what="the agent address")
        argv = [sys.executable, "-m", "observer", "serve", "--port", "0", "--no-browser", "--node-token-file",
                str(tmp / "agent-token"), "--login-token-file", str(tmp / "logins"), "--allow-destructive-actions",
                "--attach", f"{NODE}={address}"]  # fmt: skip
        self.serve = subprocess.Popen(argv, cwd=ROOT, stdout=pipe, stderr=subprocess.STDOUT, env=clean_env())
        assert self.serve.stdout is not None
        m, _ = read_line(self.serve.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 90, "the URL")
        self.base = m.group(1)

    def stop(self) -> None:
        if self.serve is not None:
            stop_process(self.serve)
        if self.app.stdin is not None:
            self.app.stdin.close()  # the program ends when its stdin closes
        try:
            self.app.wait(20)
        finally:
            stop_process(self.app)


@pytest.fixture(scope="module")
def stack(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("mixed"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1600})
    p = ctx.new_page()
    p.js_errors = []
    p.on("pageerror", lambda e: p.js_errors.append(str(e)))
    login_with_form(p, stack.base, OPERATOR)
    yield p
    errors = p.js_errors
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def test_one_tree_holds_the_supervision_tree_and_the_programs_tasks(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.base}/nodes/{NODE}/tree?expand=all")
    page.wait_for_selector('#tree g[data-kind="supervisor"]', timeout=60000)
    page.wait_for_selector('#tree g[data-kind="taskgroup"]', timeout=30000)
    page.wait_for_selector('#tree g[data-kind="loop"]')
    kinds = page.evaluate("() => [...document.querySelectorAll('#tree g[data-pid]')].map((g) => g.dataset.kind)")
    processes = [k for k in kinds if k not in ("task", "taskgroup", "gather", "timeout", "loop")]
    assert kinds.count("task") >= 3 and len(processes) >= 3, kinds  # main and two pollers; the sup and its workers
    text = page.inner_text("#tree")
    assert "billing_sup" in text and "poller-0" in text and "poller-1" in text, text
    # the processes' own tasks are not drawn again as tasks
    labels = page.evaluate(
        "() => [...document.querySelectorAll('#tree g[data-kind=\"task\"]')].map((g) => g.textContent)"
    )
    assert not [t for t in labels if "keeper" in t], labels


def test_the_inspector_answers_for_a_process_and_for_a_task(page: Any, stack: Stack) -> None:
    def pid_of(q: str) -> Any:
        resp = page.request.get(f"{stack.base}/api/nodes/{NODE}/search?q={q}")
        rows = resp.json().get("matches", []) if resp.ok else []
        return rows and str(rows[0]["pid"])

    task = wait_for(lambda: pid_of("poller-0"), timeout=60, what="the poller task")
    page.goto(f"{stack.base}/nodes/{NODE}/processes/{urllib.parse.quote(task, safe='')}")
    page.wait_for_function("() => document.getElementById('insp')?.innerText.includes('poller')", timeout=15000)
    assert "coroutine" in page.inner_text("#insp")
    page.wait_for_selector("#act-cancel")  # a task's action: cancel
    sup = wait_for(lambda: pid_of("billing_sup"), timeout=30, what="the supervisor")
    page.goto(f"{stack.base}/nodes/{NODE}/processes/{urllib.parse.quote(sup, safe='')}")
    page.wait_for_selector("#act-kill", timeout=15000)  # a process's actions: kill...
    assert "children" in page.inner_text("#insp")

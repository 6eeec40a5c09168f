"""FastAPI on uvicorn in a real browser: the unmodified app
(``tests/browser/fastapi_app.py``) started by the launcher
(``python -m agent run -- python -m uvicorn ...``), a real ``observer serve
--attach`` process attached to its agent, real HTTP load on loopback all along,
and headless Chromium on the observer's pages. The tree shows request tasks
appear and finish, a failing handler arrives on the Crashes page, a TaskGroup
child's failure shows its siblings cancelled, and cancelling a background task
from the inspector works and is audited."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.agent.conftest import OP_TOKEN
from tests.browser.conftest import ROOT, login_with_form
from tests.observer import wait_for
from tests.observer.nodes import clean_env, read_line, stop_process

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

OPERATOR = "fastapi-browser-operator-0123"
NODE = "fastapi"
LISTENING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


class Drain(threading.Thread):
    """Reads a child's output for its whole run (a full pipe would block it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.text = ""

    def run(self) -> None:
        while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
            self.text += chunk.decode(errors="replace")


class Load(threading.Thread):
    """Real HTTP load on loopback: GET /ok in a loop until stopped."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stopping = threading.Event()
        self.statuses: list[int] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            with urllib.request.urlopen(f"{self.base}/ok", timeout=10) as r:
                r.read()
                self.statuses.append(r.status)


class Stack:
    """The launcher running uvicorn on the app, and ``observer serve`` attached to its agent."""

    def __init__(self, tmp: Path) -> None:
        (tmp / "agent-token").write_text(OP_TOKEN)
        (tmp / "logins").write_text(f"{OPERATOR} role=operator name=op\n")
        addr_file = tmp / "agent-address"
        cmd = [sys.executable, "-m", "agent", "run", "--bind", "127.0.0.1:0", "--token-file", str(tmp / "agent-token")]
        cmd += ["--address-file", str(addr_file), "--"]
        cmd += [sys.executable, "-m", "uvicorn", "tests.browser.fastapi_app:app", "--host", "127.0.0.1"]
        cmd += ["--port", "0", "--loop", "asyncio", "--no-access-log"]
        self.app = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
        self.serve: subprocess.Popen[bytes] | None = None
        self.loads: list[Load] = []
        assert self.app.stderr is not None
        m, out = read_line(self.app.stderr, LISTENING, 60, "uvicorn listening")
        self.app_log = Drain(self.app.stderr)
        self.app_log.text = out
        self.app_log.start()
        self.app_base = f"http://127.0.0.1:{m.group(1)}"
        address = wait_for(lambda: addr_file.exists() and addr_file.read_text(), timeout=20, what="the agent address")
        argv = [sys.executable, "-m", "observer", "serve", "--port", "0", "--no-browser", "--node-token-file",
                str(tmp / "agent-token"), "--login-token-file", str(tmp / "logins"), "--allow-destructive-actions",
                "--attach", f"{NODE}={address}"]  # fmt: skip
        self.serve = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env())
        assert self.serve.stdout is not None
        m2, out2 = read_line(self.serve.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 90, "the URL")
        self.serve_log = Drain(self.serve.stdout)
        self.serve_log.text = out2
        self.serve_log.start()
        self.base = m2.group(1)
        self.loads = [Load(self.app_base) for _ in range(3)]
        for t in self.loads:
            t.start()

    def get(self, path: str, timeout: float = 20) -> int:
        try:
            with urllib.request.urlopen(f"{self.app_base}{path}", timeout=timeout) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def stop(self) -> None:
        for t in self.loads:
            t.stopping.set()
        for t in self.loads:
            t.join(15)
        if self.serve is not None:
            stop_process(self.serve)
        stop_process(self.app)


@pytest.fixture(scope="module")
def stack(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("fastapi"))
    try:
        yield s
    finally:
        s.stop()
    assert all(t.statuses and set(t.statuses) == {200} for t in s.loads), "the load saw errors"
    assert "observer-agent: not started" not in s.app_log.text


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 2000})
    p = ctx.new_page()
    p.js_errors = []
    p.on("pageerror", lambda e: p.js_errors.append(str(e)))
    login_with_form(p, stack.base, OPERATOR)
    yield p
    errors = p.js_errors
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def api(page: Any, stack: Stack, path: str) -> Any:
    resp = page.request.get(stack.base + path)
    assert resp.ok, (path, resp.status, resp.text()[:300])
    return resp.json()


def held_requests(page: Any, stack: Stack) -> list[str]:
    """The pids of request tasks waiting in the ``slow`` handler."""
    held = []
    for row in api(page, stack, f"/api/nodes/{NODE}/search?q=run_asgi")["matches"]:
        pid = str(row["pid"])
        resp = page.request.get(f"{stack.base}/api/nodes/{NODE}/processes/{urllib.parse.quote(pid, safe='')}")
        stack_ = (resp.json().get("inspect") or {}).get("stack") or [] if resp.ok else []
        if any(str(f.get("function", "")).endswith("slow") for f in stack_):
            held.append(pid)
    return held


def test_the_tree_shows_request_tasks_appear_and_finish(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.base}/nodes/{NODE}/tree")
    page.wait_for_selector('#tree g[data-kind="loop"]', timeout=30000)
    slow = [threading.Thread(target=stack.get, args=("/slow",), daemon=True) for _ in range(3)]
    for t in slow:
        t.start()
    pids = wait_for(lambda: len(h := held_requests(page, stack)) == 3 and h, timeout=20, what="3 held requests")
    sel = [f'#tree g[data-pid="{pid}"]' for pid in pids]
    page.wait_for_function("(sels) => sels.every((s) => document.querySelector(s))", arg=sel, timeout=20000)
    assert stack.get("/release") == 200
    for t in slow:
        t.join(20)
    page.wait_for_function("(sels) => sels.every((s) => !document.querySelector(s))", arg=sel, timeout=20000)


def test_a_failing_handler_arrives_on_the_crashes_page(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.base}/crashes")
    assert stack.get("/fail") == 500
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr[data-group]')].some((tr) => tr.innerText.includes('ValueError'))",
        timeout=30000,
    )
    assert "sk_live_fastapi" not in page.inner_text("body")


def test_a_taskgroup_childs_failure_shows_its_siblings_cancelled(page: Any, stack: Stack) -> None:
    page.goto(f"{stack.base}/events?node={NODE}&q=batch")
    statuses: list[int] = []
    batch = threading.Thread(target=lambda: statuses.append(stack.get("/batch")), daemon=True)
    batch.start()

    def siblings() -> Any:  # both siblings seen alive before one of them fails
        names = {str(m.get("name")) for m in api(page, stack, f"/api/nodes/{NODE}/search?q=batch-sibling")["matches"]}
        return {"batch-sibling-1", "batch-sibling-2"} <= names

    wait_for(siblings, timeout=20, what="the batch's siblings")
    assert stack.get("/poison") == 200
    batch.join(20)
    assert statuses == [500]
    page.wait_for_function(
        """() => {
          const rows = [...document.querySelectorAll('#ev-list li[data-kind="exit"]')].map((li) => li.innerText);
          const cancelled = rows.filter((t) => t.includes('batch-sibling') && t.includes('cancelled')).length;
          return rows.some((t) => t.includes('poison batch item')) && cancelled >= 2;
        }""",
        timeout=30000,
    )


def test_cancel_the_background_task_from_the_inspector_is_audited(page: Any, stack: Stack) -> None:
    rec = api(page, stack, f"/api/nodes/{NODE}/processes/cache-refresher")
    pid = str(rec["pid"])
    page.goto(f"{stack.base}/nodes/{NODE}/processes/{urllib.parse.quote(pid, safe='')}")
    page.wait_for_selector("#act-cancel")
    assert "cache_refresher" in page.inner_text("#insp")
    page.click("#act-cancel")
    page.wait_for_selector("dialog#confirm[open] .preview")
    page.click("#confirm-ok")
    page.wait_for_selector(".exited", timeout=10000)

    def done() -> Any:  # the audit row is written before the command, its result after the reply
        audit = api(page, stack, "/api/audit?limit=50")["audit"]
        return [r for r in audit if r["action"] == "cancel" and r["target"] == pid and r["done_time"]]

    rows = wait_for(done, timeout=10, what="the cancel's audited result")
    assert rows[0]["ok"] == 1 and rows[0]["node"] == NODE and str(rows[0]["who"]).startswith("op")

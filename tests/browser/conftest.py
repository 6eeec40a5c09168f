"""End-to-end browser tests: a real ``observer demo`` in a subprocess and a
real headless Chromium driven by Playwright's sync API.

Chromium comes from Debian (``apt-get install chromium``); Playwright cannot
download its own browsers here. Without either, the tests are skipped on a
developer's machine and fail loudly in CI (``CI=true``).
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


def _unavailable(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)


class DemoServer:
    """``python -m observer demo --port 0 --no-browser`` in a subprocess."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer", "demo", "--port", "0", "--no-browser", "--seed", "3", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.output = ""
        m = self._wait_for_url(timeout=90)
        self.base, self.token = m.group(1), m.group(2)
        self.login_url = f"{self.base}/login?token={self.token}"

    def _wait_for_url(self, timeout: float) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (m := URL_RE.search(self.output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop()
                    raise AssertionError(f"observer demo printed no login URL: {self.output[-2000:]!r}")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"observer demo exited: {self.output[-2000:]!r}")
                self.output += chunk.decode(errors="replace")
        return m

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    path = chromium_path()
    if path is None:
        _unavailable("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def rw_server(browser: Any) -> Iterator[DemoServer]:
    """A demo with destructive actions on (started only once the browser is known to work)."""
    s = DemoServer("--allow-destructive-actions")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def ro_server(browser: Any) -> Iterator[DemoServer]:
    """A demo with destructive actions off (the default)."""
    s = DemoServer()
    try:
        yield s
    finally:
        s.stop()


def logged_in_page(browser: Any, server: DemoServer, *, height: int = 1000) -> Any:
    ctx = browser.new_context(viewport={"width": 1400, "height": height})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.js_errors = errors
    login_with_form(page, server.base, server.token)
    return page


def login_with_form(page: Any, base: str, token: str) -> None:
    """Log in through the login form (the token in a URL is exchanged once per server run)."""
    resp = page.goto(f"{base}/login")
    assert resp is not None and resp.ok, "no login form"
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login" not in page.url, "login failed"


@pytest.fixture
def rw_page(browser: Any, rw_server: DemoServer) -> Iterator[Any]:
    page = logged_in_page(browser, rw_server, height=2400)
    yield page
    errors = page.js_errors
    page.context.close()
    assert not errors, f"JavaScript errors: {errors}"


@pytest.fixture
def ro_page(browser: Any, ro_server: DemoServer) -> Iterator[Any]:
    page = logged_in_page(browser, ro_server)
    yield page
    errors = page.js_errors
    page.context.close()
    assert not errors, f"JavaScript errors: {errors}"

"""The wheel as a new user gets it: built from the tree, installed into a fresh
virtual environment outside the repository (dependencies from PyPI), and
``observer demo`` started from that environment serves every page to a real
headless Chromium.

Nothing of the checkout is on the path of the installed observer: it runs in
a temporary directory with no ``PYTHONPATH``, so templates, static files, the
socket.io client and the demo system must all come from the wheel.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import observer
from tests.browser.conftest import URL_RE

ROOT = Path(__file__).resolve().parents[2]
OWN = ("actors", "agent", "observer")

pytestmark = pytest.mark.slow


def _run(argv: list[str], *, cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv[:3]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], cwd=out, timeout=300)
    (whl,) = out.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    assert ROOT not in home.parents
    _run([sys.executable, "-m", "venv", str(home / "env")], cwd=home, timeout=120)
    _run([str(home / "env" / "bin" / "pip"), "install", "--quiet", str(wheel)], cwd=home, timeout=500)
    return home / "env"


def test_the_package_list_names_every_package_of_the_tree_and_nothing_else() -> None:
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(conf["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in OWN for p in (ROOT / top).rglob("__init__.py")} - {
        ""
    }
    assert listed - {"observer.web"} == found, "pyproject.toml [tool.setuptools] packages is out of date"
    assert conf["tool"]["setuptools"]["package-dir"] == {"observer.web": "web"}


def test_the_wheel_holds_our_packages_the_web_side_and_the_demo(wheel: Path) -> None:
    assert wheel.name.startswith("supervision_observer-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(meta).decode()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(OWN), tops  # no bench, no examples, no web at the top level
    templates = {p.name for p in (ROOT / "web" / "templates").glob("*.html")}
    statics = {str(p.relative_to(ROOT / "web")) for p in (ROOT / "web" / "static").rglob("*") if p.is_file()}
    assert {f"observer/web/templates/{t}" for t in templates} <= set(names)
    assert {f"observer/web/{s}" for s in statics} <= set(names)
    assert "observer/web/node_modules/socket.io-client/dist/socket.io.min.js" in names
    assert {"observer/demo/system.py", "observer/demo/__main__.py", "observer/demo/node.py"} <= set(names)
    assert {"actors/py.typed", "agent/py.typed", "observer/py.typed"} <= set(names)
    version = re.search(r"^Version: (\S+)$", metadata, re.M)
    init = (ROOT / "observer" / "__init__.py").read_text()
    assert version is not None and f'__version__ = "{version.group(1)}"' in init  # the one version source
    release = version.group(1).split(".dev")[0]
    assert f"## [{release}]" in (ROOT / "CHANGELOG.md").read_text()


class InstalledDemo:
    """``observer demo`` run by the console script of the fresh environment."""

    def __init__(self, env: Path, cwd: Path) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_") and k != "PYTHONPATH"}
        self.proc = subprocess.Popen(
            [str(env / "bin" / "observer"), "demo", "--port", "0", "--no-browser", "--seed", "3"],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=clean,
        )
        self.output = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 90
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (m := URL_RE.search(self.output)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.stop()
                    raise AssertionError(f"the installed observer printed no login URL: {self.output[-2000:]!r}")
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"the installed observer exited: {self.output[-2000:]!r}")
                self.output += chunk.decode(errors="replace")
        self.base, self.token = m.group(1), m.group(2)

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


@pytest.fixture(scope="module")
def installed_demo(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstalledDemo]:
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import observer, observer.demo.system; print(observer.__file__)"],
        cwd=tmp_path_factory.mktemp("run"),
        timeout=60,
    )
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the checkout
    cwd = tmp_path_factory.mktemp("cli")
    version = _run([str(venv / "bin" / "observer"), "--version"], cwd=cwd, timeout=60)
    assert version.strip() == f"observer, version {observer.__version__}"
    # the optional parts say what to install instead of failing on an import
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    no_mcp = subprocess.run([str(venv / "bin" / "observer"), "mcp", "--attach", "a=127.0.0.1:9"], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert no_mcp.returncode == 1 and "supervision-observer[mcp]" in no_mcp.stderr, no_mcp.stderr
    demo = InstalledDemo(venv, tmp_path_factory.mktemp("cwd"))
    try:
        yield demo
    finally:
        demo.stop()


STATIC = {"document", "script", "stylesheet", "image", "font"}
PAGES = {
    "/": "main",
    "/nodes/demo/tree": "#tree svg.tree g[data-pid]",
    "/nodes/demo/processes": "main table tbody tr",
    "/nodes/demo/processes/payments_sup": ".insp-head h1",
    "/events": "#ev-list",
    "/crashes": "main",
    "/audit": "main",
    "/chaos": "main",
}
"""Every page, with an element that shows it was drawn (data ones where the demo gives data at once)."""


def test_the_installed_wheel_serves_every_page_to_chromium(browser: Any, installed_demo: InstalledDemo) -> None:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        failed: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # what the page is made of must load; a fetch or long-poll cut short by leaving the page is no failure
        page.on("requestfailed", lambda r: failed.append(r.url) if r.resource_type in STATIC else None)
        page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        resp = page.goto(f"{installed_demo.base}/login?token={installed_demo.token}")
        assert resp is not None and resp.ok
        for path, selector in PAGES.items():
            resp = page.goto(installed_demo.base + path)
            assert resp is not None and resp.ok, (path, resp and resp.status)
            assert "/login" not in page.url, path
            page.wait_for_selector("header nav", timeout=15000)
            page.wait_for_selector(selector, timeout=30000)
            page.wait_for_load_state("networkidle", timeout=15000)
            assert errors == [], (path, errors)
            assert failed == [], (path, failed)
        for vendor in ("/vendor/socket.io.min.js", "/vendor/plotly.min.js", "/static/js/app.js"):
            r = page.request.get(installed_demo.base + vendor)
            assert r.ok and len(r.body()) > 1000, vendor
        assert page.request.get(f"{installed_demo.base}/api/nodes/demo/processes?limit=5").json()["total"] > 10
    finally:
        ctx.close()

"""A tree big enough to be sent folded (3,031 processes: 30 supervisors of 100 workers):
the first drawing, search, a path to the root and live patching reach into folded supervisors."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from bench.browser import system
from tests.browser.conftest import login_with_form

GROUPS, PER = 30, 100
PID_RE = re.compile(r"pid (\S+)")

HAS_HIT = """(pid) => [...document.querySelectorAll('#tree g.hit[data-pid]')].some((g) => g.dataset.pid === pid)"""
DRAWN_FOLDED = """() => {
  const folded = new Set(window.observer.view.stats().folded.map((f) => f.pid));
  const g = [...document.querySelectorAll('#tree g.toggle[data-toggle]')].find((t) => folded.has(t.dataset.toggle));
  return g ? g.dataset.toggle : null;
}"""
CLICK_TOGGLE = """(id) => [...document.querySelectorAll('#tree g.toggle[data-toggle]')]
  .find((t) => t.dataset.toggle === id).querySelector('circle')
  .dispatchEvent(new MouseEvent('click', {bubbles: true}))"""
FLASHED = "(id) => window.observer.view.flashing(id)"


@pytest.fixture(scope="module")
def big(browser: Any) -> Iterator[tuple[Any, str, str]]:
    with system(GROUPS, PER) as running:
        yield running


@pytest.fixture
def page(browser: Any, big: tuple[Any, str, str]) -> Iterator[Any]:
    _, base, token = big
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    login_with_form(pg, base, token)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors: {errors}"


def _api(page: Any, base: str, path: str) -> Any:
    resp = page.request.get(base + path)
    assert resp.ok, (path, resp.status)
    return resp.json()


def _open_tree(page: Any, base: str, query: str = "") -> None:
    total = GROUPS * PER + GROUPS + 1
    page.wait_for_function(
        f"""async () => (await (await fetch('/api/nodes/bench/processes?limit=1')).json()).total >= {total}""",
        polling=500,
        timeout=120_000,
    )
    page.goto(f"{base}/nodes/bench/tree{query}")
    page.wait_for_function("() => (window.observer?.view?.stats?.()?.items || 0) > 5")


def test_the_big_tree_comes_folded_and_search_unfolds_what_it_finds(page: Any, big: tuple[Any, str, str]) -> None:
    node, base, _ = big
    _open_tree(page, base)
    st = page.evaluate("() => window.observer.view.stats()")
    total = _api(page, base, "/api/nodes/bench/processes?limit=1")["total"]
    assert len(st["folded"]) == GROUPS and st["processes"] == total == GROUPS * PER + GROUPS + 1
    assert st["items"] == GROUPS + 2  # the node, the root, its folded supervisors
    # search: a worker inside a folded supervisor is unfolded into view, its path highlighted
    pid = node.ask("pid 7 42", PID_RE).group(1)
    path = _api(page, base, f"/api/nodes/bench/search?q={urllib.parse.quote(pid)}")["matches"][0]["path"]
    assert path[-1] == pid and len(path) == 3
    page.fill("#tree-search", pid)
    page.wait_for_selector("#tree-search-results li[data-i]")
    page.press("#tree-search", "Enter")
    page.wait_for_function(HAS_HIT, arg=pid)
    assert page.evaluate("(id) => window.observer.view.childrenOf(id).length", path[1]) == PER
    on_path = page.evaluate("() => [...document.querySelectorAll('#tree g.onpath[data-id]')].map((g) => g.dataset.id)")
    assert set(path) <= set(on_path)
    # unfolding by its toggle
    other = page.evaluate(DRAWN_FOLDED)
    assert other, "a folded supervisor is drawn with its toggle"
    # (the drawing is redrawn as batches come: a click dispatched at once, not a click that waits for stillness)
    page.evaluate(CLICK_TOGGLE, other)
    page.wait_for_function("(id) => window.observer.view.childrenOf(id).length === 100", arg=other)


def test_a_path_to_a_folded_process_and_a_restart_inside_one(page: Any, big: tuple[Any, str, str]) -> None:
    node, base, _ = big
    pid = node.ask("pid 3 5", PID_RE).group(1)
    path = _api(page, base, f"/api/nodes/bench/processes/{urllib.parse.quote(pid, safe='')}")["process"]["path"]
    # a crash report links to the tree with ?path=: the folded supervisor on it is unfolded
    _open_tree(page, base, "?path=" + urllib.parse.quote(",".join(path)))
    page.wait_for_function(HAS_HIT, arg=pid)
    # a restart inside a supervisor still folded: patched in place (the supervisor flashes), counts right
    victim = node.ask("pid 11 0", PID_RE).group(1)
    sup = _api(page, base, f"/api/nodes/bench/processes/{urllib.parse.quote(victim, safe='')}")["process"]["supervisor"]
    assert not page.evaluate("(id) => window.observer.view.has(id)", victim)
    csrf = page.evaluate("JSON.parse(document.getElementById('config').textContent).csrf")
    resp = page.request.post(
        f"{base}/api/nodes/bench/processes/{urllib.parse.quote(victim, safe='')}/kill",
        data=json.dumps({"reason": "kill"}),
        headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    assert resp.ok, resp.text()
    page.wait_for_function(FLASHED, arg=sup)
    st = page.evaluate("() => window.observer.view.stats()")
    assert st["processes"] == _api(page, base, "/api/nodes/bench/processes?limit=1")["total"]

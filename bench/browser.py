"""``python -m bench browser``: the web app in a real headless Chromium.

A synthetic node (:mod:`bench._browser_node`: one root, ``groups``
supervisors of ``per`` idle workers, labels that do not group) runs with its
agent in a subprocess; ``observer serve`` attaches to it; Playwright drives
Debian's Chromium. Figures (all timed inside the page with
``performance.now()``):

* ``tree_first_render_10k_s``: navigation start to the first drawing of the
  tree page of a ~10,000-process node (median of 3 loads).
* ``crash_to_pixel_p50_ms`` / ``_p99_ms``: a kill posted from the page (the
  inspector's API call) until the tree no longer draws the victim and draws its
  restarted successor, measured at the next animation frame after that drawing.
* ``backlog_after_60s_at_1k_events_s``: lifecycle events (exit, restart,
  spawn) the node caused but the open tree page had not yet drawn, after 60 s
  (``--quick``: 10 s) of about 1,000 such events a second;
  ``backlog_drain_s`` is how long the page then took to catch up.
* ``process_sort_100k_s``: a click on a column header of the processes page
  of a ~100,000-process node until the sorted page is drawn (median over the
  sortable columns).
* ``tree_first_render_100k_s``: as ``tree_first_render_10k_s``, for a node
  of ~100,000 processes (``--huge-tree``; 1,000 supervisors of 100 workers).
* ``tree_search_100k_s``, ``tree_path_to_root_100k_s``,
  ``crash_to_pixel_100k_p99_ms``, ``folded_flash_100k_p99_ms``: on that
  tree, search, a crash report's path link, kills drawn and kills patched
  into a folded supervisor (see :func:`measure_big_tree_use`).
* ``process_sort_1m_s``: as ``process_sort_100k_s``, for a node of
  ~1,000,000 processes (``--huge``; its agent's snapshot alone takes minutes
  to build and send on a small machine: run it on a quiet one, ``--only
  sort1m``). The first click on a column sorts the million rows on the
  server; the later pages and the other direction read that order.

``--screenshots`` also saves every page of ``observer demo`` to
``docs/screenshots/``. A figure that could not be measured is null, with the
reason in ``notes``.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from bench._util import ROOT, emit, machine, median, percentile, progress, rnd

URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+)/login\?token=(\S+)")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "docs" / "screenshots"
OBSERVER = [sys.executable, "-m", "observer"]
SCRUB_HALFWAY = """() => {
  const r = document.getElementById('tl-range');
  r.value = 500;
  r.dispatchEvent(new Event('input'));
}"""

FIRST_TREE = """() => { window.__firstTree = null;
  addEventListener('observer:rendered', (e) => {
    if (e.detail.view === 'tree' && window.__firstTree === null) window.__firstTree = e.detail.t;
  });
}"""

KILL_TO_PIXEL = """async ([node, pid]) => {
  const v = window.observer.view;
  const parent = v.parentOf(pid);
  if (!parent) return {error: 'victim not drawn'};
  const before = new Set(v.childrenOf(parent));
  const t0 = performance.now();
  let how = 'already';
  let api = null;
  const done = () => {
    if (v.parentOf(pid)) return false;
    const fresh = v.childrenOf(parent).filter((id) => !before.has(id));
    if (!fresh.length) return false;
    return fresh;
  };
  return await new Promise((resolve) => {
    const finish = (fresh) => {
      removeEventListener('observer:rendered', on);
      clearTimeout(timer);
      requestAnimationFrame(() => resolve({ms: performance.now() - t0, api_ms: api, how, successor: fresh[0]}));
    };
    const on = (e) => {
      if (e.detail.view !== 'tree') return;
      const fresh = done();
      if (fresh) { how = e.detail.reason; finish(fresh); }
    };
    addEventListener('observer:rendered', on);
    const timer = setTimeout(() => {
      removeEventListener('observer:rendered', on);
      resolve({error: 'timeout'});
    }, 10000);
    window.observer.api.kill(node, pid, 'kill').then(() => { api = performance.now() - t0; });
  });
}"""

UNTIL = """(cond, ms, what) => new Promise((resolve, reject) => {
  const end = performance.now() + ms;
  const step = () => {
    if (cond()) resolve(performance.now());
    else if (performance.now() > end) reject(new Error(`${what}: not within ${ms / 1000} s`));
    else requestAnimationFrame(step);
  };
  step();
})"""

SEARCH_TO_FOCUS = (
    """async (pid) => {
  const until = """
    + UNTIL
    + """;
  const input = document.getElementById('tree-search');
  const list = document.getElementById('tree-search-results');
  const v = window.observer.view;
  if (v.parentOf(pid)) return {error: 'already drawn'};
  input.value = pid;
  const t0 = performance.now();
  input.dispatchEvent(new Event('input'));
  const listed = await until(
    () => [...list.querySelectorAll('li[data-i] .mono')].some((e) => e.textContent === pid), 60000, 'search results');
  input.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}));
  const drawn = await until(() => v.parentOf(pid) !== null, 60000, 'the hit drawn');
  return {results_ms: listed - t0, drawn_ms: drawn - t0};
}"""
)

PATH_DRAWN = """() => { window.__pathDrawn = null;
  const pid = (new URL(location.href).searchParams.get('path') || '').split(',').filter(Boolean).pop();
  if (!pid) return;
  const step = () => {
    const v = window.observer && window.observer.view;
    if (v && v.parentOf && v.parentOf(pid)) { window.__pathDrawn = performance.now(); return; }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}"""

FOLDED_FLASH = (
    """async ([node, pid, sup]) => {
  const until = """
    + UNTIL
    + """;
  const v = window.observer.view;
  if (v.parentOf(pid)) return {error: 'the victim is drawn (its supervisor is not folded)'};
  if (!v.parentOf(sup)) return {error: 'its supervisor is not drawn'};
  if (v.flashing(sup)) await until(() => !v.flashing(sup), 10000, 'the last flash over');
  const t0 = performance.now();
  await window.observer.api.kill(node, pid, 'kill');
  const t = await until(() => v.flashing(sup), 10000, 'the folded supervisor flashing');
  return {ms: t - t0};
}"""
)

LATEST_EXCEPTION_REPORT = """async () => {
  const groups = (await (await fetch('/api/crashes')).json()).groups || [];
  const g = groups.find((x) => x.exception && x.latest) || groups.find((x) => x.latest);
  return g ? g.latest.id : null;
}"""

SORT_CLICK = """async (key) => {
  const th = document.querySelector(`#p-table th[data-sort="${key}"]`);
  const drawn = new Promise((resolve, reject) => {
    setTimeout(() => reject(new Error(`sort by ${key}: not drawn within 120 s`)), 120000);
    const on = (e) => {
      const d = e.detail;
      if (d.view !== 'processes' || d.reason !== 'sort' || d.sort !== key) return;
      removeEventListener('observer:rendered', on);
      requestAnimationFrame(() => resolve({t: performance.now(), total: d.total, rows: d.rows}));
    };
    addEventListener('observer:rendered', on);
  });
  const t0 = performance.now();
  th.click();
  const r = await drawn;
  return {s: (r.t - t0) / 1000, total: r.total, rows: r.rows};
}"""


class Child:
    """A subprocess whose stdout we read line by line (with a deadline)."""

    def __init__(self, args: list[str], env: dict[str, str], *, stdin: bool = False) -> None:
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.buf = ""

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (m := pattern.search(self.buf)) is None:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    raise RuntimeError(f"timed out waiting for {pattern.pattern!r}: {self.buf[-1000:]!r}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"process exited: {self.buf[-1000:]!r}")
                self.buf += chunk.decode(errors="replace")
        self.buf = self.buf[m.end() :]
        return m

    def ask(self, line: str, pattern: re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        return self.wait_for(pattern, timeout)

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with suppress(OSError):
                    f.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBSERVER_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


@contextmanager
def system(groups: int, per: int) -> Iterator[tuple[Child, str, str]]:
    """The synthetic node and an observer attached to it: ``(node, base URL, login token)``."""
    token = secrets.token_urlsafe(24)
    node = Child(
        [sys.executable, "-m", "bench._browser_node"],
        _env(OBSERVER_AGENT_TOKEN=token, BENCH_GROUPS=str(groups), BENCH_PER=str(per)),
        stdin=True,
    )
    obs: Child | None = None
    try:
        addr = node.wait_for(re.compile(r"agent (\S+) processes=(\d+)"), timeout=180).group(1)
        obs = Child(
            [
                *OBSERVER,
                "serve",
                "--attach",
                f"bench={addr}",
                "--port",
                "0",
                "--no-browser",
                "--allow-destructive-actions",
            ],
            _env(OBSERVER_NODE_TOKEN=token),
        )
        m = obs.wait_for(URL_RE, timeout=120)
        yield node, m.group(1), m.group(2)
    finally:
        if obs is not None:
            obs.stop()
        node.stop()


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        raise RuntimeError(f"chromium not found at {path} (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _login(browser: Any, base: str, token: str, *, width: int = 1400, height: int = 900) -> Any:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{base}/login")  # the form: a token in a URL is exchanged once per server run
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("button[type=submit]")
    return page


def _wait_processes(page: Any, base: str, node: str, at_least: int, timeout: float) -> int:
    """Until the observer's picture of ``node`` holds ``at_least`` processes."""
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        resp = page.request.get(f"{base}/api/nodes/{node}/processes?limit=1")
        if resp.ok:
            total = int(resp.json()["total"])
            if total >= at_least:
                return total
        time.sleep(0.5)
    raise RuntimeError(f"the observer holds {total} processes of {node}, expected {at_least}")


def measure_tree(browser: Any, args: argparse.Namespace, out: dict[str, Any], notes: list[str]) -> None:
    n = args.groups * args.per + args.groups + 1
    progress(f"tree node: {args.groups} x {args.per} workers ({n} processes)")
    with system(args.groups, args.per) as (node, base, token):
        page = _login(browser, base, token)
        out["tree_processes"] = _wait_processes(page, base, "bench", n, timeout=300)
        page.add_init_script(script=f"({FIRST_TREE})()")
        for key, query in (("tree_first_render_10k_s", ""), ("tree_first_render_10k_expanded_s", "?expand=all")):
            firsts = []
            for _ in range(3):
                page.goto(f"{base}/nodes/bench/tree{query}")
                page.wait_for_function("() => window.__firstTree !== null", timeout=120_000)
                firsts.append(page.evaluate("() => window.__firstTree") / 1000)
            drawn = page.evaluate("() => window.observer.view.stats()")
            out[key] = rnd(median(firsts))
            out[key.replace("_s", "_runs_s")] = [rnd(x) for x in firsts]
            out[key.replace("first_render", "items_laid_out").replace("_s", "")] = drawn["items"]
            progress(f"{key} {out[key]} s ({drawn['items']} items laid out of {drawn['processes']})")
            if args.screenshots:
                SHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SHOTS / ("tree-10k.png" if not query else "tree-10k-expanded.png")))

        # crash to pixel: kill workers of the first supervisors (drawn at the top)
        times: list[float] = []
        hows: list[str] = []
        failures = 0
        for k in range(args.kills):
            pid = node.ask(f"pid {k % min(args.groups, 3)} {k // 3 % args.per}", re.compile(r"pid (\S+)")).group(1)
            r = page.evaluate(KILL_TO_PIXEL, ["bench", pid])
            if "ms" in r:
                times.append(float(r["ms"]))
                hows.append(f"{r['how']}:{r['ms']:.0f}/{r['api_ms'] if r['api_ms'] is None else round(r['api_ms'])}")
            else:
                failures += 1
                notes.append(f"crash_to_pixel: kill {k} of {pid}: {r.get('error')}")
            page.wait_for_timeout(300)  # let the flash and the last refetch settle
        if times:
            out["crash_to_pixel_p50_ms"] = rnd(percentile(times, 50))
            out["crash_to_pixel_p99_ms"] = rnd(percentile(times, 99))
            out["crash_to_pixel_samples"] = len(times)
            progress("crash to pixel, drawn by:ms/kill-reply-ms: " + " ".join(hows))
            progress(f"crash to pixel p50 {out['crash_to_pixel_p50_ms']} ms, p99 {out['crash_to_pixel_p99_ms']} ms")
        if failures:
            out["crash_to_pixel_failures"] = failures

        # backlog under churn: events caused by the node vs events covered by the tree's latest drawing
        page.wait_for_function(
            "() => { const s = window.observer.view.stats(); return s.drawnLifecycle === s.receivedLifecycle; }",
            timeout=30_000,
        )
        c0 = int(node.ask("count", re.compile(r"count (\d+)")).group(1))
        d0 = int(page.evaluate("() => window.observer.view.stats().drawnLifecycle"))
        node.tell(f"churn {args.rate}")
        t0 = time.monotonic()
        progress(f"churning at {args.rate} lifecycle events/s for {args.churn_seconds:g} s")
        time.sleep(args.churn_seconds)
        c1 = int(node.ask("count", re.compile(r"count (\d+)")).group(1))
        st = page.evaluate("() => window.observer.view.stats()")
        elapsed = time.monotonic() - t0
        node.tell("churn 0")
        emitted = c1 - c0
        backlog = emitted - (int(st["drawnLifecycle"]) - d0)
        key = "backlog_after_60s_at_1k_events_s"
        out[key] = backlog
        out["backlog_window_s"] = rnd(elapsed)
        out["backlog_events_caused"] = emitted
        out["backlog_events_rate"] = rnd(emitted / elapsed)
        out["backlog_received_not_drawn"] = int(st["receivedLifecycle"]) - int(st["drawnLifecycle"])
        if emitted / elapsed < 0.9 * args.rate:
            notes.append(
                f"the synthetic node reached {emitted / elapsed:.0f} lifecycle events/s, not {args.rate:g} "
                "(its churner is bound by the node's loop on this machine)"
            )
        if args.churn_seconds != 60:
            notes.append(f"{key} measured after {args.churn_seconds:g} s (--quick), not 60 s")
        c2 = int(node.ask("count", re.compile(r"count (\d+)")).group(1))
        t1 = time.monotonic()
        drained = None
        while time.monotonic() - t1 < 60:
            if int(page.evaluate("() => window.observer.view.stats().drawnLifecycle")) - d0 >= c2 - c0:
                drained = time.monotonic() - t1
                break
            time.sleep(0.05)
        out["backlog_drain_s"] = rnd(drained) if drained is not None else None
        if drained is None:
            notes.append("the tree page had not drawn every churn event 60 s after the churn stopped")
        progress(f"backlog {backlog} events (of {emitted}); drained in {out['backlog_drain_s']} s")
        page.context.close()


def measure_big_tree(browser: Any, args: argparse.Namespace, out: dict[str, Any]) -> None:
    """``tree_first_render_100k_s``: the first drawing of a ~100,000-process node's tree."""
    groups = max(1, args.huge_tree // args.per)
    n = groups * args.per + groups + 1
    progress(f"big tree node: {groups} x {args.per} workers ({n} processes)")
    with system(groups, args.per) as (node, base, token):
        page = _login(browser, base, token)
        out["tree_100k_processes"] = _wait_processes(page, base, "bench", n, timeout=1200)
        page.add_init_script(script=f"({FIRST_TREE})()")
        firsts = []
        for _ in range(3):
            page.goto(f"{base}/nodes/bench/tree")
            page.wait_for_function("() => window.__firstTree !== null", timeout=300_000)
            firsts.append(page.evaluate("() => window.__firstTree") / 1000)
        drawn = page.evaluate("() => window.observer.view.stats()")
        out["tree_first_render_100k_s"] = rnd(median(firsts))
        out["tree_first_render_100k_runs_s"] = [rnd(x) for x in firsts]
        out["tree_items_laid_out_100k"] = drawn["items"]
        progress(f"tree_first_render_100k_s {out['tree_first_render_100k_s']} s ({drawn['items']} items laid out)")
        if args.screenshots:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "tree-100k.png"))
        measure_big_tree_use(page, node, base, groups, args, out)
        page.context.close()


def measure_big_tree_use(
    page: Any, node: Child, base: str, groups: int, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    """On the big tree's page, each time for a worker under a supervisor still
    folded (a different one each time, from the last):

    * ``tree_search_100k_s``: its pid typed in the search box until it is drawn
      (the box's 180 ms debounce, the server's search, Enter, the refetch
      that unfolds its supervisor); ``tree_search_results_100k_s`` until the
      results list shows it;
    * ``tree_path_to_root_100k_s``: a crash report's link to it
      (``/nodes/<node>/tree?path=<root>,...,<pid>``) from navigation start
      until it is drawn (two fetches: the folded tree, then its path unfolded);
    * ``crash_to_pixel_100k_p50_ms`` / ``_p99_ms``: as at 10,000 processes,
      killing workers of the supervisor that link unfolded;
    * ``folded_flash_100k_p50_ms`` / ``_p99_ms``: a worker under a folded
      supervisor killed until that supervisor flashes (its restart patched in
      place, no refetch)."""
    step = max(1, groups // 40)
    sups = iter(range(groups - 1, -1, -step))

    def worker(g: int, i: int) -> tuple[str, list[str]]:
        pid = node.ask(f"pid {g} {i}", re.compile(r"pid (\S+)")).group(1)
        hits = page.request.get(f"{base}/api/nodes/bench/search", params={"q": pid}).json()["matches"]
        path = next((h["path"] for h in hits if h["pid"] == pid), None)
        if not path:
            raise RuntimeError(f"the observer has no path to {pid}")
        return pid, path

    searches = [page.evaluate(SEARCH_TO_FOCUS, worker(next(sups), 7)[0]) for _ in range(5)]
    bad = [r for r in searches if "error" in r]
    if bad:
        raise RuntimeError(f"search: {bad[0]['error']}")
    out["tree_search_100k_s"] = rnd(median([r["drawn_ms"] / 1000 for r in searches]))
    out["tree_search_results_100k_s"] = rnd(median([r["results_ms"] / 1000 for r in searches]))
    out["tree_search_100k_runs_s"] = [rnd(r["drawn_ms"] / 1000) for r in searches]
    progress(f"tree_search_100k_s {out['tree_search_100k_s']} (results {out['tree_search_results_100k_s']})")

    page.add_init_script(script=f"({PATH_DRAWN})()")
    paths = []
    g = -1
    for _ in range(3):
        g = next(sups)
        _pid, path = worker(g, 3)
        page.goto(f"{base}/nodes/bench/tree?path={','.join(path)}")
        page.wait_for_function("() => window.__pathDrawn !== null", timeout=120_000)
        paths.append(page.evaluate("() => window.__pathDrawn") / 1000)
    out["tree_path_to_root_100k_s"] = rnd(median(paths))
    out["tree_path_to_root_100k_runs_s"] = [rnd(x) for x in paths]
    progress(f"tree_path_to_root_100k_s {out['tree_path_to_root_100k_s']}")

    kills = min(args.kills, 20)
    times: list[float] = []
    hows: list[str] = []
    for i in range(kills):  # workers of the supervisor the last link unfolded
        r = page.evaluate(KILL_TO_PIXEL, ["bench", worker(g, 10 + i)[0]])
        if "ms" not in r:
            raise RuntimeError(f"crash to pixel at 100k: {r.get('error')}")
        times.append(float(r["ms"]))
        hows.append(f"{r['how']}:{r['ms']:.0f}")
        page.wait_for_timeout(300)
    progress("crash to pixel at 100k, drawn by:ms: " + " ".join(hows))
    out["crash_to_pixel_100k_p50_ms"] = rnd(percentile(times, 50))
    out["crash_to_pixel_100k_p99_ms"] = rnd(percentile(times, 99))
    flashes = []
    for _ in range(min(kills, 10)):
        pid, path = worker(next(sups), 5)
        r = page.evaluate(FOLDED_FLASH, ["bench", pid, path[-2]])
        if "ms" not in r:
            raise RuntimeError(f"folded flash at 100k: {r.get('error')}")
        flashes.append(float(r["ms"]))
        page.wait_for_timeout(300)
    out["folded_flash_100k_p50_ms"] = rnd(percentile(flashes, 50))
    out["folded_flash_100k_p99_ms"] = rnd(percentile(flashes, 99))
    progress(
        f"crash to pixel at 100k p50 {out['crash_to_pixel_100k_p50_ms']} p99 {out['crash_to_pixel_100k_p99_ms']} ms; "
        f"folded flash p50 {out['folded_flash_100k_p50_ms']} p99 {out['folded_flash_100k_p99_ms']} ms"
    )


def measure_sort(browser: Any, args: argparse.Namespace, out: dict[str, Any], *, size: int, key: str) -> None:
    """``key`` (``process_sort_100k_s`` or ``process_sort_1m_s``): column clicks on a ``size``-process table."""
    groups = max(1, size // args.per)
    n = groups * args.per + groups + 1
    progress(f"process table node: {groups} x {args.per} workers ({n} processes)")
    with system(groups, args.per) as (_node, base, token):
        page = _login(browser, base, token)
        tag = key.removeprefix("process_sort_").removesuffix("_s")  # 100k or 1m
        out[f"sort_{tag}_processes"] = _wait_processes(page, base, "bench", n, timeout=3600)
        page.goto(f"{base}/nodes/bench/processes")
        page.wait_for_selector("#p-rows tr[data-pid]")
        runs: dict[str, float] = {}
        for col in ("mailbox", "rate", "handler_time", "memory", "restarts", "name", "pid"):
            r = page.evaluate(SORT_CLICK, col)
            runs[col] = r["s"]
            if int(r["total"]) < n:
                raise RuntimeError(f"sorted {r['total']} processes, expected {n}")
        out[key] = rnd(median(list(runs.values())))
        out[f"process_sort_{tag}_runs_s"] = {k: rnd(v) for k, v in runs.items()}
        progress(f"{key} {out[key]} s (median of {len(runs)} columns)")
        if args.screenshots:
            page.screenshot(path=str(SHOTS / f"processes-{key.split('_')[-2]}.png"))
        page.context.close()


def screenshots(browser: Any) -> list[str]:
    """Every page of ``observer demo`` (destructive actions on), saved to docs/screenshots."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    demo = Child(
        [*OBSERVER, "demo", "--port", "0", "--no-browser", "--seed", "3", "--allow-destructive-actions"],
        _env(),
    )
    saved: list[str] = []

    def shot(page: Any, name: str) -> None:
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path))
        saved.append(str(path.relative_to(ROOT)))

    try:
        base, token = demo.wait_for(URL_RE, timeout=120).groups()
        ctx = browser.new_context(viewport={"width": 1440, "height": 900})
        page = ctx.new_page()
        page.goto(f"{base}/nodes/demo/tree")
        shot(page, "login")
        page.goto(f"{base}/login?token={token}")
        # the payments subtree's flight recorder on, so its crash reports carry the last messages
        page.goto(f"{base}/nodes/demo/processes/payments_sup")
        page.click("#fr-on")
        page.goto(f"{base}/")
        page.wait_for_timeout(12_000)  # let the charts fill and the demo crash a few times
        shot(page, "overview")
        page.goto(f"{base}/nodes/demo/tree")
        page.wait_for_function("() => window.observer?.view?.stats?.()?.items > 5")
        page.wait_for_timeout(1500)
        shot(page, "tree")
        page.fill("#tree-search", "room:rand")
        page.wait_for_selector("#tree-search-results li[data-i]")
        page.press("#tree-search", "Enter")
        page.check("#tree-links")
        page.hover("#tree g[data-pid] >> text=payments")
        page.wait_for_timeout(800)
        shot(page, "tree-search-links")
        page.goto(f"{base}/nodes/demo/processes")
        page.wait_for_selector("#p-rows tr[data-pid]")
        shot(page, "processes")
        page.goto(f"{base}/nodes/demo/processes/payments")
        page.wait_for_selector("#act-kill")
        shot(page, "inspector")
        page.click("#act-kill")
        page.wait_for_selector("dialog#confirm[open] .preview")
        shot(page, "kill-preview")
        page.click("#confirm-cancel")
        page.goto(f"{base}/events")
        page.check("#ev-crashes")
        page.wait_for_selector("#ev-list li details summary", timeout=60_000)
        page.click("#ev-list li details summary")
        page.wait_for_selector("#ev-list li details[open] pre.tb")
        page.wait_for_function("() => window.observer.view.timeTravelStats()?.items > 1")
        page.evaluate(SCRUB_HALFWAY)
        page.wait_for_timeout(1200)
        shot(page, "events")
        page.goto(f"{base}/crashes")
        page.wait_for_selector("#cr-rows tr[data-group]")
        shot(page, "crashes")
        report = page.evaluate(LATEST_EXCEPTION_REPORT)
        if report is not None:
            page.goto(f"{base}/crash/{report}")
            page.wait_for_selector("#crash h1")
            page.wait_for_timeout(500)
            shot(page, "crash-report")
        page.goto(f"{base}/audit")
        page.wait_for_selector("#audit-table tbody tr")
        shot(page, "audit")
        page.goto(f"{base}/chaos")
        page.wait_for_selector("#chaos-form:not(.hidden)")
        shot(page, "chaos")
        ctx.close()
    finally:
        demo.stop()
    return saved


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s of churn, 8 kills, 20,000-process sort")
    ap.add_argument("--screenshots", action="store_true", help="also save every page to docs/screenshots/")
    ap.add_argument("--only-screenshots", action="store_true", help="only save the screenshots")
    ap.add_argument("--only", choices=("tree", "sort", "tree100k", "sort1m"), default=None, help="run one part only")
    ap.add_argument("--groups", type=int, default=100, help="supervisors of the tree node")
    ap.add_argument("--per", type=int, default=100, help="workers per supervisor")
    ap.add_argument("--big", type=int, default=None, help="workers of the process-table node (default 100,000)")
    ap.add_argument("--huge-tree", type=int, default=None, help="workers of the big tree node (default 100,000)")
    ap.add_argument("--huge", type=int, default=None, help="workers of the million-row table node (default 1,000,000)")
    ap.add_argument("--kills", type=int, default=None, help="kills for crash-to-pixel (default 30)")
    ap.add_argument("--rate", type=float, default=1000.0, help="lifecycle events/s during the backlog run")
    ap.add_argument("--churn-seconds", type=float, default=None, help="length of the backlog run (default 60)")
    args = ap.parse_args(argv)
    args.big = args.big or (20_000 if args.quick else 100_000)
    args.huge_tree = args.huge_tree or (20_000 if args.quick else 100_000)
    args.huge = args.huge or (50_000 if args.quick else 1_000_000)
    args.kills = args.kills or (8 if args.quick else 30)
    args.churn_seconds = args.churn_seconds or (10.0 if args.quick else 60.0)
    keys = (
        "crash_to_pixel_p50_ms",
        "crash_to_pixel_p99_ms",
        "tree_first_render_10k_s",
        "backlog_after_60s_at_1k_events_s",
        "process_sort_100k_s",
        "tree_first_render_100k_s",
        "tree_search_100k_s",
        "tree_path_to_root_100k_s",
        "crash_to_pixel_100k_p99_ms",
        "folded_flash_100k_p99_ms",
        "process_sort_1m_s",
    )
    out: dict[str, Any] = dict.fromkeys(keys)
    notes: list[str] = []
    try:
        with chromium() as browser:
            if args.screenshots or args.only_screenshots:
                out["screenshots"] = screenshots(browser)
                progress(f"saved {len(out['screenshots'])} screenshots to docs/screenshots/")
            if not args.only_screenshots:
                steps = (
                    ("tree", lambda: measure_tree(browser, args, out, notes)),
                    ("sort", lambda: measure_sort(browser, args, out, size=args.big, key="process_sort_100k_s")),
                    ("tree100k", lambda: measure_big_tree(browser, args, out)),
                    ("sort1m", lambda: measure_sort(browser, args, out, size=args.huge, key="process_sort_1m_s")),
                )
                for name, step in steps:
                    if args.only not in (None, name):
                        continue
                    try:
                        step()
                    except Exception as exc:  # one failed step leaves its figures null, with the reason
                        notes.append(f"{name}: {type(exc).__name__}: {exc}")
                        progress(f"{name} failed: {exc}")
    except Exception as exc:
        notes.append(f"no browser: {type(exc).__name__}: {exc}")
    if args.big != 100_000 and out.get("process_sort_100k_s") is not None:
        notes.append(f"process_sort_100k_s measured with {out.get('sort_100k_processes')} processes (--quick/--big)")
    if args.huge != 1_000_000 and out.get("process_sort_1m_s") is not None:
        notes.append(f"process_sort_1m_s measured with {out.get('sort_1m_processes')} processes (--quick/--huge)")
    if args.huge_tree != 100_000 and out.get("tree_first_render_100k_s") is not None:
        notes.append(
            f"tree_first_render_100k_s and the search, path and kill figures on that tree measured "
            f"with {out.get('tree_100k_processes')} processes (--huge-tree)"
        )
    out["quick"] = args.quick
    out["machine"] = machine()
    if notes:
        out["notes"] = "; ".join(notes)
    emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

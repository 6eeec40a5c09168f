"""``python -m bench browser``'s use of the big tree (search, a path link, kills
drawn and kills flashed into folded supervisors), run on a small folded tree
(2,041 processes: 20 supervisors of 100 workers; a tree of more than 2,000 is
sent folded) so that the benchmark's code is exercised by the suite. Speed is
never asserted: each figure must be measured (a number), nothing more."""

from __future__ import annotations

import argparse
import math
from typing import Any

from bench.browser import measure_big_tree_use, system
from tests.browser.conftest import login_with_form

GROUPS, PER = 20, 100
FIGURES = (
    "tree_search_100k_s",
    "tree_search_results_100k_s",
    "tree_path_to_root_100k_s",
    "crash_to_pixel_100k_p50_ms",
    "crash_to_pixel_100k_p99_ms",
    "folded_flash_100k_p50_ms",
    "folded_flash_100k_p99_ms",
)


def test_the_benchmark_measures_search_paths_and_kills_on_a_folded_tree(browser: Any) -> None:
    with system(GROUPS, PER) as (node, base, token):
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            login_with_form(page, base, token)
            total = GROUPS * PER + GROUPS + 1
            page.wait_for_function(
                f"async () => (await (await fetch('/api/nodes/bench/processes?limit=1')).json()).total >= {total}",
                polling=500,
                timeout=120_000,
            )
            page.goto(f"{base}/nodes/bench/tree")
            page.wait_for_function("() => (window.observer?.view?.stats?.()?.folded?.length || 0) === 20")
            out: dict[str, Any] = {}
            measure_big_tree_use(page, node, base, GROUPS, argparse.Namespace(kills=4), out)
        finally:
            ctx.close()
    bad = {k: out.get(k) for k in FIGURES if not isinstance(out.get(k), float) or not math.isfinite(out[k])}
    assert not bad, f"figures not measured: {bad}"
    assert len(out["tree_search_100k_runs_s"]) == 5 and len(out["tree_path_to_root_100k_runs_s"]) == 3
    assert not errors, f"JavaScript errors: {errors}"

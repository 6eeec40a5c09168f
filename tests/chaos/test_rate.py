"""Chaos at rate: on a tree whose budgets allow the rate, the engine kills on schedule, skips
nothing, and counts the attempts it could not make when it falls behind (``skipped.late``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench._sustained import build
from observer.chaos.experiment import Experiment, Probe, kill_spec
from observer.chaos.runner import attached, run
from tests.chaos.conftest import TOKEN, DemoHost

PROBES = (
    Probe("recovery_ms", 3000, "back within 3 s"),
    Probe("supervisors_gave_up", 0, "nobody gave up"),
    Probe("children_restored", True, "every child back"),
)


@pytest.fixture
def shards() -> Iterator[DemoHost]:
    """50 supervisors of 10 (half workers, half gen_servers), 20 restarts per 5 s each."""
    h = DemoHost(demo=False)
    try:
        h.run_async(build(h.node, groups=50, per=10))
        yield h
    finally:
        h.stop()


def experiment(**args: object) -> Experiment:
    spec = kill_spec({"mode": "within_budget", "budget_margin": 1, "seed": 5, **args})
    return Experiment(title="rate", probes=PROBES, method=(spec,), settle_s=5.0, abort_on_deviation=False)


def test_within_budget_at_100_kills_a_second_on_sized_budgets_skips_nothing(shards: DemoHost) -> None:
    with attached(shards.address, TOKEN) as (mgr, att):
        _, j = run(mgr, att, experiment(interval_ms=10, duration_s=1.5))
    s = j["summary"]
    assert j["status"] == "completed", j["deviations"][:3]
    assert s["give_ups"] == 0
    assert s["attempted"] == 150
    # nothing is skipped but what the engine could not attempt in time: node, agent and engine share
    # this process (and its GIL), and a loaded machine once held them up long enough for the engine
    # to fall a second behind and count 100 of the 150 slots late -- how many is the machine's doing
    late = s["skipped"]["late"]
    assert late < 150 and sum(s["skipped"].values()) == late, s["skipped"]
    assert s["carried_out"] == s["recovered"] == 150 - late
    assert s["recovery_ms"]["p99"] is not None
    assert len(j["budgets"]) > min(20, (150 - late) // 3)  # spread at random over the supervisors


def test_an_engine_behind_schedule_counts_the_attempts_it_never_made_as_late(shards: DemoHost) -> None:
    # 10,000 kills/s for 0.3 s: more than any node here can take; nothing is dropped silently
    with attached(shards.address, TOKEN) as (mgr, att):
        _, j = run(mgr, att, experiment(interval_ms=0.1, duration_s=0.3))
    s = j["summary"]
    assert s["give_ups"] == 0
    assert s["attempted"] == 3000
    assert s["skipped"]["late"] > 0
    assert s["carried_out"] + s["errors"] + sum(s["skipped"].values()) == 3000

"""The chaos engine against real trees on a real node, through the real agent and attachment."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actors
from observer.chaos.experiment import Experiment, Probe, kill_spec
from observer.chaos.runner import attached, run
from tests.chaos.conftest import TOKEN, DemoHost
from tests.observer import wait_for

PROBES = (
    Probe("recovery_ms", 3000, "back within 3 s"),
    Probe("supervisors_gave_up", 0, "nobody gave up"),
    Probe("children_restored", True, "every child back"),
)


async def idle(proc: actors.Process) -> None:
    while True:
        await proc.receive()


def experiment(settle: float = 5.0, probes: tuple[Probe, ...] = PROBES, abort: bool = True, **args: Any) -> Experiment:
    return Experiment(title="test", probes=probes, method=(kill_spec(args),), settle_s=settle, abort_on_deviation=abort)


def killed_kinds(journal: dict[str, Any]) -> set[str]:
    return {k["kind"] for k in journal["kills"] if k["status"] != "error"}


def test_within_budget_run_on_the_demo_keeps_every_supervisor_up(demo_host: DemoHost) -> None:
    exp = experiment(interval_ms=5, kills=300, seed=3, budget_margin=1, protected=["pool", "agent*"])
    with attached(demo_host.address, TOKEN) as (mgr, att):
        _, j = run(mgr, att, exp)
        gave_up = att.model.summary()["gave_up"]
    assert j["status"] == "completed", j["deviations"]
    assert j["hypothesis_held"] is True
    assert gave_up == [] and j["gave_up"] == []
    s = j["summary"]
    assert s["attempted"] == 300
    assert s["carried_out"] >= 15  # the demo's budgets allow ~20 restarts per period
    assert s["skipped"]["would_exceed_budget"] > 0  # the budget held the rest back
    errors = [k.get("error") for k in j["kills"] if k["status"] == "error"]
    # a victim may end on its own (a short-lived session) between the draw and the kill: the agent
    # says no_such_process; nothing else may go wrong
    assert all(e.startswith("no_such_process") for e in errors), errors[:5]
    assert s["carried_out"] + len(errors) + sum(s["skipped"].values()) == 300
    for b in j["budgets"].values():
        assert b["peak_used"] <= b["intensity"] - 1, b
    assert "supervisor" not in killed_kinds(j)
    assert all(k["name"] != "pool" for k in j["kills"]), "a protected process was killed"
    assert s["recovery_ms"]["p50"] is not None and s["recovery_ms"]["p99"] >= s["recovery_ms"]["p50"]
    # the real node agrees: every supervisor of the demo is still the one it started with
    for name in ("demo_sup", "pool_sup", "payments_sup", "chat_sup", "rooms_sup", "sessions_sup"):
        assert demo_host.whereis(name) is not None, name


# -- random trees ----------------------------------------------------------------------------------------------

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
CARRIED: list[int] = []
"""Kills carried out per random tree (the test after the property checks the total)."""
_ids = itertools.count()


@st.composite
def trees(draw: st.DrawFn) -> dict[str, Any]:
    def node(depth: int) -> dict[str, Any]:
        n_children = draw(st.integers(1, 6))
        kids: list[Any] = []
        for _ in range(n_children):
            if depth < 2 and draw(st.integers(0, 3)) == 0:
                kids.append(node(depth + 1))
            else:
                kids.append("w")
        return {
            "strategy": draw(st.sampled_from(STRATEGIES)),
            "intensity": draw(st.sampled_from([1, 2, 5, 10, 30])),
            "period": draw(st.sampled_from([0.2, 0.5, 1.0])),
            "children": kids,
        }

    return {"tree": node(0), "seed": draw(st.integers(0, 2**16)), "interval_ms": draw(st.sampled_from([2, 3, 5]))}


def specs(t: dict[str, Any], prefix: str) -> list[actors.ChildSpec]:
    out = []
    for i, c in enumerate(t["children"]):
        cid = f"{prefix}.{i}"
        if c == "w":
            out.append(actors.worker(cid, idle, label="RandomWorker"))
        else:
            out.append(
                actors.supervisor_spec(
                    cid, specs(c, cid), strategy=c["strategy"], intensity=c["intensity"], period=c["period"]
                )
            )
    return out


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[DemoHost, Any, Any]]:
    h = DemoHost(demo=False)
    try:
        with attached(h.address, TOKEN) as (mgr, att):
            yield h, mgr, att
    finally:
        h.stop()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=trees())
def test_within_budget_never_makes_a_random_tree_give_up(shared: Any, case: dict[str, Any]) -> None:
    h, mgr, att = shared
    name = f"rand{next(_ids)}"
    t = case["tree"]
    root = h.run_async(
        actors.start_supervisor(
            h.node, specs(t, name), strategy=t["strategy"], intensity=t["intensity"], period=t["period"], name=name
        )
    )
    try:
        wait_for(lambda: att.model.names().get(name) == str(root), what="the tree in the model")
        wait_for(lambda: len(att.model.search(f"{name}.")) >= len(t["children"]), what="children in the model")
        # margin 0: nothing else crashes in these trees, so the budgets are pushed to their very limit
        exp = experiment(
            settle=3.0, root=name, interval_ms=case["interval_ms"], kills=300, seed=case["seed"], budget_margin=0
        )
        _, j = run(mgr, att, exp)
        assert j["gave_up"] == [], j["gave_up"]
        CARRIED.append(j["summary"]["carried_out"])
        assert j["hypothesis_held"] is True, (j["deviations"], j["summary"])
        assert "supervisor" not in killed_kinds(j)
        assert h.run(lambda: h.node.is_alive(root)), "the random tree's root died"
        for b in j["budgets"].values():
            assert b["peak_used"] <= b["intensity"], b
    finally:
        h.run_async(actors.stop_server(h.node, root, actors.SHUTDOWN, timeout=10.0))


def test_the_random_trees_took_hundreds_of_kills() -> None:
    if not CARRIED:
        pytest.skip("run with the property test above")
    assert sum(CARRIED) >= 100, CARRIED  # typically 300-500 (2,400 attempts)


def test_unbounded_run_on_a_fragile_tree_deviates_with_the_give_up_as_evidence(shared: Any) -> None:
    h, mgr, att = shared
    kids = [actors.worker(f"f{i}", idle, label="FragileWorker") for i in range(3)]
    fragile = actors.supervisor_spec("fragile", kids, intensity=1, period=5.0, name="fragile")
    top = h.run_async(actors.start_supervisor(h.node, [fragile], intensity=5, period=5.0, name="fragile_top"))
    try:
        wait_for(lambda: len(att.model.search("FragileWorker")) == 3, what="fragile workers")
        exp = experiment(root="fragile", interval_ms=20, kills=20, mode="unbounded", seed=1)
        _, j = run(mgr, att, exp)
        assert j["status"] == "deviated"
        assert j["hypothesis_held"] is False
        assert j["gave_up"] and j["gave_up"][0]["intensity"] == 1
        dev = next(d for d in j["deviations"] if d["probe"] == "supervisors_gave_up")
        assert dev["evidence"]["gave_up"]["supervisor"] == j["gave_up"][0]["supervisor"]
        assert dev["evidence"]["recent_kills"], "the kills that led to it are in the evidence"
        assert j["summary"]["attempted"] < 20, "abort on deviation stopped the killing"
    finally:
        h.run_async(actors.stop_server(h.node, top, actors.SHUTDOWN, timeout=10.0))


def test_within_budget_on_the_fragile_tree_skips_the_fatal_kill(shared: Any) -> None:
    h, mgr, att = shared
    kids = [actors.worker(f"g{i}", idle, label="FragileWorker2") for i in range(3)]
    top = h.run_async(actors.start_supervisor(h.node, kids, intensity=1, period=5.0, name="fragile2"))
    try:
        wait_for(lambda: len(att.model.search("FragileWorker2")) == 3, what="fragile workers")
        exp = experiment(settle=2.0, root="fragile2", interval_ms=10, kills=30, seed=2, budget_margin=0)
        _, j = run(mgr, att, exp)
        why = (j["summary"]["skipped"], [(k["pid"], k["status"], k.get("error")) for k in j["kills"]])
        assert j["hypothesis_held"] is True, (j["deviations"], why)
        assert j["summary"]["carried_out"] == 1, why  # intensity 1 in 5 s: one restart, no more
        assert sum(j["summary"]["skipped"].values()) + len(j["kills"]) == 30, why
        assert j["summary"]["skipped"]["would_exceed_budget"] >= 20, why
        assert h.run(lambda: h.node.is_alive(top))
    finally:
        h.run_async(actors.stop_server(h.node, top, actors.SHUTDOWN, timeout=10.0))


def test_supervisors_and_protected_processes_are_never_killed_unless_targeted(shared: Any) -> None:
    h, mgr, att = shared
    inner = [actors.worker(f"p{i}", idle, label="Guarded" if i == 0 else "Plain") for i in range(4)]
    top = h.run_async(
        actors.start_supervisor(
            h.node, [actors.supervisor_spec("inner", inner, intensity=1000, period=1.0, name="guarded_inner")],
            intensity=1000, period=1.0,
            name="guarded_top",
        )
    )  # fmt: skip
    try:
        wait_for(lambda: len(att.model.search("Plain")) == 3, what="workers")
        exp = experiment(settle=2.0, root="guarded_top", interval_ms=10, kills=150, protected=["Guarded"], seed=5)
        _, j = run(mgr, att, exp)
        assert j["hypothesis_held"] is True, j["deviations"]
        kills = [k for k in j["kills"] if k["status"] != "error"]
        # a victim is spared until its restart is seen: 3 candidates limit the pace, not the budget
        assert len(kills) >= 50, j["summary"]
        assert j["summary"]["skipped"]["would_exceed_budget"] == 0  # (budget_unknown: a fresh supervisor)
        assert {k["label"] for k in kills} == {"Plain"}
        # targeted explicitly (a sequence), a protected process and a supervisor are killed
        guarded = next(x["pid"] for x in att.model.search("Guarded") if x["label"] == "Guarded")
        inner_sup = att.model.names()["guarded_inner"]
        exp2 = experiment(settle=2.0, policy="sequence", sequence=[guarded, inner_sup], interval_ms=300)
        _, j2 = run(mgr, att, exp2)
        assert [k["pid"] for k in j2["kills"]] == [guarded, inner_sup]
        assert j2["kills"][1]["kind"] == "supervisor"
        assert j2["hypothesis_held"] is True, j2["deviations"]
    finally:
        h.run_async(actors.stop_server(h.node, top, actors.SHUTDOWN, timeout=10.0))


def test_abort_stops_killing_at_once(shared: Any) -> None:
    h, mgr, att = shared
    kids = [actors.worker(f"a{i}", idle, label="Abortee") for i in range(5)]
    top = h.run_async(actors.start_supervisor(h.node, kids, intensity=100_000, period=1.0, name="abort_top"))
    seen: list[float] = []
    try:
        wait_for(lambda: len(att.model.search("Abortee")) == 5, what="workers")
        from observer.chaos.engine import Engine

        exp = experiment(settle=1.0, root="abort_top", interval_ms=5, duration_s=60.0, mode="unbounded")
        engine = Engine(att, exp, loop=mgr.loop, on_progress=lambda k, d: k == "kill" and seen.append(time.time()))
        fut = engine.start()
        wait_for(lambda: engine.journal.summary()["carried_out"] >= 20, timeout=20, what="some kills")
        engine.abort()
        after_abort = len(engine.journal.kills)
        aborted_at = engine.journal.aborted_at
        j = fut.result(30)
        assert j["status"] == "aborted"
        assert j["hypothesis_held"] is True
        assert aborted_at is not None
        assert len(j["kills"]) == after_abort, "a kill was sent after abort() returned"
        assert all(k["time"] <= aborted_at for k in j["kills"])
        assert j["ended"] - aborted_at < 15
    finally:
        h.run_async(actors.stop_server(h.node, top, actors.SHUTDOWN, timeout=10.0))


def test_a_deviation_before_the_method_fails_the_experiment_without_killing(shared: Any) -> None:
    _h, mgr, att = shared
    probes = (Probe("alive", True, "nobody is there", {"names": ["no_such_name"]}),)
    exp = experiment(probes=probes, interval_ms=10, kills=5)
    _, j = run(mgr, att, exp)
    assert j["status"] == "failed"
    assert j["hypothesis_held"] is False
    assert j["kills"] == []
    assert j["checks"][0]["evidence"]["missing"] == ["no_such_name"]


def test_threads_are_not_leaked_by_a_run() -> None:
    before = set(threading.enumerate())
    h = DemoHost(demo=False)
    try:
        with attached(h.address, TOKEN):
            pass
    finally:
        h.stop()
    wait_for(lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()], what="threads")


def test_losing_the_node_mid_run_stops_the_experiment_as_a_deviation() -> None:
    h = DemoHost(demo=False)
    try:
        kids = [actors.worker(f"l{i}", idle, label="Lost") for i in range(3)]
        h.run_async(actors.start_supervisor(h.node, kids, intensity=100_000, period=1.0, name="lost_top"))
        with attached(h.address, TOKEN) as (mgr, att):
            from observer.chaos.engine import Engine

            exp = experiment(settle=1.0, root="lost_top", interval_ms=10, duration_s=60.0, mode="unbounded")
            engine = Engine(att, exp, loop=mgr.loop)
            fut = engine.start()
            wait_for(lambda: engine.journal.summary()["carried_out"] >= 5, timeout=20, what="some kills")
            h.agent.stop()
            j = fut.result(30)
        assert j["status"] == "deviated" and j["hypothesis_held"] is False
        assert any(d["probe"] == "attachment" and "lost the node" in d["message"] for d in j["deviations"])
        assert j["ended"] - j["started"] < 30
    finally:
        h.node.stop_thread()

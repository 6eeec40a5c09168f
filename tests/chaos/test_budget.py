"""The within-budget ledger on a model fed with synthetic agent messages."""

from __future__ import annotations

import time

from observer.chaos.budget import BudgetLedger
from observer.model import NodeModel
from tests.observer import ev, linked, rec, snapshot, sup


def model_with(used: int, intensity: int = 3) -> NodeModel:
    m = NodeModel("t")
    procs = linked(
        [
            sup("<0.1.0>", intensity=intensity, used=used, name="top"),
            rec("<0.2.0>", supervisor="<0.1.0>", child_id="a", trap_exit=False),
            rec("<0.3.0>", supervisor="<0.1.0>", child_id="b", trap_exit=False),
        ]
    )
    m.apply_many(snapshot(procs, seq=1, names={"top": "<0.1.0>"}))
    return m


def test_restarts_before_the_experiment_count_even_if_a_foreign_restart_is_the_first_news() -> None:
    m = model_with(used=1)
    now = time.time()
    # a restart nobody in the experiment caused, seen before any kill was planned
    restart = {"supervisor": "<0.1.0>", "child_id": "a", "old_pid": "<0.2.0>", "new_pid": "<0.4.0>", "restarts": 1}
    m.apply(ev("restart", 5, time=now, **restart))
    ledger = BudgetLedger(m)
    assert ledger.restarted("<0.1.0>", "<0.2.0>", now) is False
    assert ledger.used("<0.1.0>", now, 5.0) == 2  # the one before + this one, not just this one
    why, after = ledger.check({"<0.1.0>": 1}, margin=0)
    assert why is None and after == {"<0.1.0>": 3}
    why, _ = ledger.check({"<0.1.0>": 2}, margin=0)
    assert why == "would_exceed_budget"


def test_held_kills_count_until_their_restart_and_expire_a_period_after_it() -> None:
    m = model_with(used=0, intensity=2)
    ledger = BudgetLedger(m)
    units, down, dies = ledger.plan(m, "<0.2.0>", "kill") or ({}, [], False)
    assert dies and units == {"<0.1.0>": 1} and "<0.2.0>" in down
    assert ledger.check(units, margin=0)[0] is None
    ledger.hold("<0.2.0>", "<0.1.0>", units)
    ledger.hold("<0.3.0>", "<0.1.0>", units)
    assert ledger.check(units, margin=0)[0] == "would_exceed_budget"  # 2 held + 1 > 2
    assert ledger.full("<0.1.0>", margin=0) is True
    t = time.time()
    assert ledger.restarted("<0.1.0>", "<0.2.0>", t) is True
    ledger.release("<0.3.0>")  # that kill was never sent
    assert ledger.used("<0.1.0>", t, 5.0) == 1
    assert ledger.used("<0.1.0>", t + 5.1, 5.0) == 0  # expired a period (and a little) after the restart
    assert ledger.check(units, margin=1)[0] is None
    assert ledger.full("<0.1.0>", margin=0) is False
    info = ledger.info("<0.1.0>")
    assert info is not None and info["intensity"] == 2 and info["name"] == "top"
    assert ledger.check({"<0.9.0>": 1}, margin=0)[0] == "budget_unknown"


def test_spending_one_kill_moves_only_its_own_held_units_wherever_they_are() -> None:
    m = model_with(used=0, intensity=5)
    ledger = BudgetLedger(m)
    ledger.hold("<0.2.0>", "<0.1.0>", {"<0.1.0>": 1, "<0.9.0>": 2})  # its own supervisor, and one above
    ledger.hold("<0.3.0>", "<0.1.0>", {"<0.1.0>": 1})
    t = time.time()
    assert ledger.used("<0.1.0>", t, 5.0) == 2 and ledger.used("<0.9.0>", t, 5.0) == 2
    ledger.spend("<0.2.0>", t)
    assert ledger.used("<0.1.0>", t, 5.0) == 2  # one spent, one still held
    assert ledger.used("<0.9.0>", t, 5.0) == 2  # spent now, no longer held
    assert ledger.used("<0.9.0>", t + 5.1, 5.0) == 0
    ledger.release("<0.3.0>")
    assert ledger.used("<0.1.0>", t, 5.0) == 1
    ledger.spend("<0.3.0>", t)  # already released: nothing left to spend
    assert ledger.used("<0.1.0>", t, 5.0) == 1

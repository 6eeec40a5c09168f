"""Victim choice: the candidate pool follows the model's changes and agrees with a full scan."""

from __future__ import annotations

import random

from observer.chaos.experiment import kill_spec
from observer.chaos.hypothesis import path_in, path_of
from observer.chaos.targets import CandidatePool, candidates
from observer.model import NodeModel
from tests.observer import ev, linked, rec, snapshot, sup


def tree() -> NodeModel:
    """top -> {s1 -> w1..w4, s2 -> w5..w8, agent_conn (protected)}; plus an unsupervised process."""
    procs = [sup("<0.1.0>", name="top"), sup("<0.2.0>", supervisor="<0.1.0>", child_id="s1")]
    procs.append(sup("<0.3.0>", supervisor="<0.1.0>", child_id="s2"))
    for i in range(1, 9):
        parent = "<0.2.0>" if i <= 4 else "<0.3.0>"
        kind = "gen_server" if i % 2 else "worker"
        procs.append(rec(f"<0.{10 + i}.0>", supervisor=parent, child_id=f"w{i}", kind=kind))
    procs.append(rec("<0.30.0>", supervisor="<0.1.0>", child_id="agent", name="agent_conn"))
    procs.append(rec("<0.31.0>", name="loner"))
    m = NodeModel("t")
    m.apply_many(snapshot(linked(procs), seq=1, names={"top": "<0.1.0>", "agent_conn": "<0.30.0>"}))
    return m


WORKERS = {f"<0.{10 + i}.0>" for i in range(1, 9)}


def test_a_pool_holds_supervised_workers_and_spares_supervisors_protected_and_unsupervised() -> None:
    m = tree()
    pool = CandidatePool(m, kill_spec({"kills": 1}))
    assert pool.stale
    pool.refresh(set())
    assert set(pool.sample(random.Random(1), 100)) == WORKERS
    assert len(pool) == 8 and "<0.2.0>" not in pool and "<0.30.0>" not in pool and "<0.31.0>" not in pool
    assert set(candidates(m, kill_spec({"kills": 1}), set())) == WORKERS


def test_a_pool_follows_exits_restarts_and_a_worker_that_becomes_a_supervisor() -> None:
    m = tree()
    pool = CandidatePool(m, kill_spec({"kills": 1}))
    pool.refresh(set())
    down = {"<0.11.0>"}
    pool.discard("<0.11.0>")  # killed: down until its restart
    changes = m.apply(ev("exit", 2, pid="<0.11.0>", reason="killed"))
    changes += m.apply(ev("spawn", 3, pid="<0.40.0>", supervisor="<0.2.0>", child_id="w1", kind="gen_server"))
    restart = {"supervisor": "<0.2.0>", "child_id": "w1", "old_pid": "<0.11.0>", "new_pid": "<0.40.0>"}
    changes += m.apply(ev("restart", 4, **restart, restarts=1))
    down.discard("<0.11.0>")
    pool.on_changes(changes, down)
    assert "<0.11.0>" not in pool and "<0.40.0>" in pool
    # a process spawned under a worker makes that worker a supervisor: it leaves the pool
    changes = m.apply(ev("spawn", 5, pid="<0.41.0>", supervisor="<0.12.0>", child_id="x"))
    pool.on_changes(changes, down)
    assert "<0.12.0>" not in pool and "<0.41.0>" in pool
    expected = set(candidates(m, kill_spec({"kills": 1}), down))
    assert set(pool.sample(random.Random(2), 100)) == expected and len(pool) == len(expected)


def test_a_snapshot_makes_the_pool_stale_until_the_next_refresh() -> None:
    m = tree()
    pool = CandidatePool(m, kill_spec({"kills": 1}))
    pool.refresh(set())
    changes = m.apply_many(snapshot(linked([sup("<0.1.0>", name="top"), rec("<0.50.0>", supervisor="<0.1.0>")]), 9))
    pool.on_changes(changes, set())
    assert pool.stale
    pool.refresh(set())
    assert set(pool.sample(random.Random(3), 10)) == {"<0.50.0>"} and pool.refreshes == 2


def test_a_rooted_pool_keeps_to_its_subtree_across_a_supervisor_restart() -> None:
    m = tree()
    spec = kill_spec({"kills": 1, "root": "<0.2.0>"})
    pool = CandidatePool(m, spec)
    pool.refresh(set())
    under_s1 = {"<0.11.0>", "<0.12.0>", "<0.13.0>", "<0.14.0>"}
    assert set(pool.sample(random.Random(4), 100)) == under_s1
    changes = m.apply(ev("spawn", 2, pid="<0.60.0>", supervisor="<0.3.0>", child_id="w9"))
    pool.on_changes(changes, set())
    assert "<0.60.0>" not in pool  # under s2: outside the root


def test_a_pool_agrees_with_a_full_scan_after_a_random_storm_of_kills_and_restarts() -> None:
    m = tree()
    spec = kill_spec({"kills": 1})
    pool = CandidatePool(m, spec)
    pool.refresh(set())
    rng = random.Random(5)
    seq, nxt = 10, 100
    down: set[str] = set()
    for _ in range(300):
        victims = pool.sample(rng, 1)
        if victims and rng.random() < 0.6:
            v = victims[0]
            pool.discard(v)
            down.add(v)
            continue
        if not down:
            continue
        old = rng.choice(sorted(down))
        with m.locked() as g:
            r = dict(g.nodes[old])
        new = f"<0.{nxt}.0>"
        nxt += 1
        changes = m.apply(ev("exit", seq, pid=old, reason="killed"))
        changes += m.apply(
            ev("spawn", seq + 1, pid=new, supervisor=r["supervisor"], child_id=r["child_id"], kind=r["kind"])
        )
        changes += m.apply(
            ev("restart", seq + 2, supervisor=r["supervisor"], child_id=r["child_id"], old_pid=old, new_pid=new)
        )
        seq += 3
        down.discard(old)
        pool.on_changes(changes, down)
        assert len(pool) == len(set(candidates(m, spec, down)))
    assert set(pool.sample(rng, 100)) == set(candidates(m, spec, down))


def test_a_kill_reads_the_same_child_id_path_from_the_view_as_from_the_records() -> None:
    m = tree()
    with m.view() as v:
        recs = dict(v.items())
        for pid in recs:
            assert path_in(v, pid) == path_of(recs, pid)[0]
        assert path_in(v, "<0.13.0>") == ("top", "s1", "w3")
        assert path_in(v, "<0.31.0>") == ("loner",) and path_in(v, "<0.99.0>") == ()

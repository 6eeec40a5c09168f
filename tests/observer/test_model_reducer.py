"""The reducer on its own: a function of (state, message, now), the one place messages are folded."""

from __future__ import annotations

import json
from typing import Any

from observer.model import NodeModel, State, build_tree, checkpoint, reduce, replay
from observer.model.snapshot import prepare
from tests.observer import ev, linked, rec, snapshot, sup


def P(i: int) -> str:
    return f"<0.{i}.0>"


def fold(state: State, msgs: list[dict[str, Any]], now: float = 50.0) -> State:
    for m in msgs:
        state, _ = reduce(state, m, now)
    return state


def frozen(state: State) -> str:
    return json.dumps(checkpoint(state), sort_keys=True, default=str)


def tree_records() -> list[dict[str, Any]]:
    return linked(
        [
            sup(P(1), name="top"),
            rec(P(2), supervisor=P(1), child_id="a", label="A"),
            rec(P(3), supervisor=P(1), child_id="b", label="B"),
        ]
    )


def test_snapshot_end_builds_a_new_state_and_leaves_the_old_one_as_it_was() -> None:
    old = fold(State(), [*snapshot(tree_records(), seq=3), ev("spawn", 4, pid=P(9), label="late")])
    msgs = snapshot([rec(P(20)), rec(P(21), links=[P(20)])], seq=10)
    old = fold(old, msgs[:-1])  # begin and chunks: kept aside, the picture unchanged
    assert set(old.graph) == {P(1), P(2), P(3), P(9)}
    before, graph = frozen(old), old.graph
    new, changes = reduce(old, msgs[-1], 60.0)
    assert new is not old and old.graph is graph and frozen(old) == before  # readers of the old one saw nothing move
    assert set(new.graph) == {P(20), P(21)} and new.graph.has_edge(P(20), P(21))
    assert [c.kind for c in changes] == ["reset", "status"] and new.status == "up" and new.last_seen == 60.0
    again, none = reduce(new, msgs[-1], 61.0)  # no snapshot_begin before it: nothing to do
    assert again is new and none == []


def test_the_same_messages_fold_to_the_same_state_whoever_folds_them() -> None:
    msgs = [
        {"t": "status", "status": "up", "node": {"node_id": "a@b"}, "session": "s"},
        *snapshot(tree_records(), seq=3, names={"top": P(1)}),
        ev("spawn", 4, pid=P(4), label="A", supervisor=P(1), child_id="c"),
        ev("exit", 5, pid=P(2), reason="boom", reason_kind="exception"),
        ev("spawn", 6, pid=P(5), label="A", supervisor=P(1), child_id="a", restarts=1),
        ev("restart", 7, supervisor=P(1), child_id="a", old_pid=P(2), new_pid=P(5), restarts=1),
        {"t": "gap", "dropped": 3},
        {"t": "status", "status": "down", "reason": "gone"},
    ]
    live = NodeModel("n", clock=lambda: 50.0)
    live.apply_many(msgs)
    history = replay([(m, 50.0) for m in msgs])
    assert build_tree(history, "n") == live.tree()
    assert live.process(P(1))["children"] == [P(5), P(3), P(4)]  # type: ignore[index]  # spec order kept
    assert history.status == "down" and history.down_since == 50.0 and history.gaps == 1
    assert history.restart_hist[P(5)][0]["old_pid"] == P(2)


def test_a_recorded_up_status_means_attached_and_syncing_until_the_snapshot() -> None:
    st, changes = reduce(State(), {"t": "status", "status": "up", "node": {"node_id": 7}, "session": "s1"}, 5.0)
    assert st.status == "syncing" and st.connected_at == 5.0 and st.node_meta == {"node_id": 7, "session": "s1"}
    assert [c.data for c in changes] == [{"status": "syncing"}]
    st = fold(st, snapshot([rec(P(1))], seq=1))
    assert st.status == "up"
    st, changes = reduce(st, {"t": "status", "status": "down", "reason": "eof"}, 9.0)
    assert (st.status, st.status_reason, st.down_since) == ("down", "eof", 9.0)
    st, _ = reduce(st, {"t": "status", "status": "down", "reason": "again"}, 12.0)
    assert st.down_since == 9.0  # down since the first


def test_observer_side_facts_go_through_the_reducer_too() -> None:
    st = fold(State(), snapshot(tree_records(), seq=1))
    st, _ = reduce(st, {"t": "info", "pid": P(2), "info": {"memory": 4096, "trap_exit": True}}, 1.0)
    assert st.graph.nodes[P(2)]["memory"] == 4096 and st.graph.nodes[P(2)]["trap_exit"] is True
    st, _ = reduce(st, {"t": "child_order", "supervisor": P(1), "ids": ["b", "a", "b"]}, 1.0)
    assert st.cid_order[P(1)] == {"b": 0, "a": 1}
    st, _ = reduce(st, ev("spawn", 2, pid=P(7), supervisor=P(1), child_id="z"), 1.0)
    assert st.cid_order[P(1)]["z"] == 2
    st, changes = reduce(st, {"t": "info", "pid": P(99), "info": {"memory": 1}}, 1.0)
    assert changes == [] and P(99) not in st.graph
    assert reduce(st, {"t": "no-such-message"}, 1.0) == (st, [])


def test_a_snapshot_chunk_of_prepared_records_folds_as_the_wire_records() -> None:
    # the history writer's queue holds a chunk's records prepare()-d (observer.store.HistoryStore.record)
    msgs = snapshot(tree_records(), seq=3, names={"top": P(1)})
    prepared = [m if m["t"] != "snapshot_chunk" else {**m, "procs": [prepare(r) for r in m["procs"]]} for m in msgs]
    assert any(m["t"] == "snapshot_chunk" for m in msgs)
    assert frozen(fold(State(), prepared)) == frozen(fold(State(), msgs))

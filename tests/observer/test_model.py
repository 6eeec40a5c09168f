"""NodeModel fed with agent-shaped messages (no sockets; see test_attach for the real thing)."""

from __future__ import annotations

import itertools
import random
import threading
import time
import types
from collections import defaultdict
from typing import Any

import pytest

from observer.model import Change, NodeModel, pid_key, tidy_layout
from observer.model import node as node_module
from tests.observer import ev, linked, rec, snapshot, sup


def P(i: int) -> str:
    return f"<0.{i}.0>"


def feed(model: NodeModel, msgs: list[dict[str, Any]]) -> list[Change]:
    out: list[Change] = []
    for m in msgs:
        out.extend(model.apply(m))
    return out


def small_tree(strategy: str = "one_for_one", intensity: int = 3, used: int = 0) -> NodeModel:
    """S(1) supervising a(2), b(3), c(4); an unsupervised worker w(9)."""
    m = NodeModel("n")
    recs = linked(
        [
            sup(P(1), strategy, intensity, used, name="top"),
            rec(P(2), supervisor=P(1), child_id="a", label="A"),
            rec(P(3), supervisor=P(1), child_id="b", label="B"),
            rec(P(4), supervisor=P(1), child_id="c", label="C"),
            rec(P(9), label="loner"),
        ]
    )
    feed(m, snapshot(recs, seq=10, names={"top": P(1)}))
    return m


# -- snapshots and events -------------------------------------------------------------------------


def test_snapshot_replaces_the_picture_atomically_at_snapshot_end() -> None:
    m = small_tree()
    assert m.pids() == {P(1), P(2), P(3), P(4), P(9)}
    msgs = snapshot([rec(P(20)), rec(P(21))], seq=50)
    for msg in msgs[:-1]:
        assert m.apply(msg) == []
        assert m.pids() == {P(1), P(2), P(3), P(4), P(9)}  # still the old picture
    changes = m.apply(msgs[-1])
    assert m.pids() == {P(20), P(21)}
    assert changes[0].kind == "reset" and changes[0].data == {"count": 2, "seq": 50}
    assert m.summary()["status"] == "up"


def test_graph_edges_sup_links_and_monitors() -> None:
    m = small_tree()
    with m.locked() as g:
        assert g.edges[P(1), P(2)]["kind"] == "sup" and g.edges[P(1), P(2)]["link"] is True
        # a supervised pair's link is stored once, on the sup edge: no child -> supervisor edge
        assert not g.has_edge(P(2), P(1))
    assert m.links(P(1)) == {"links": [[P(1), P(2)], [P(1), P(3)], [P(1), P(4)]], "monitors": []}
    assert m.process(P(2))["links"] == [P(1)]  # type: ignore[index]
    feed(m, [ev("link", 11, a=P(2), b=P(9)), ev("monitor", 12, watcher=P(9), target=P(3), ref="r1")])
    feed(m, [ev("monitor", 13, watcher=P(9), target=P(3), ref="r2")])
    d = m.process(P(9))
    assert d is not None
    assert d["links"] == [P(2)] and d["monitors"] == [P(3)]
    assert m.process(P(3))["monitored_by"] == [P(9)]  # type: ignore[index]
    feed(m, [ev("demonitor", 14, watcher=P(9), target=P(3), ref="r1")])
    assert m.process(P(9))["monitors"] == [P(3)]  # type: ignore[index]  # one monitor left
    feed(m, [ev("demonitor", 15, watcher=P(9), target=P(3), ref="r2"), ev("unlink", 16, a=P(9), b=P(2))])
    d = m.process(P(9))
    assert d is not None and d["links"] == [] and d["monitors"] == []
    assert m.links(P(2)) == {"links": [[P(2), P(1)]], "monitors": []}


def test_events_are_idempotent_and_old_ones_ignored() -> None:
    m = small_tree()
    # already reflected in the snapshot (seq <= 10): ignored
    assert feed(m, [ev("exit", 5, pid=P(2), reason="x", reason_kind="other")]) == []
    assert P(2) in m
    # a spawn of a pid the snapshot already has only updates it
    ch = feed(m, [ev("spawn", 11, pid=P(3), name=None, label="B2", parent=P(1), supervisor=P(1), child_id="b")])
    assert [c.kind for c in ch] == ["update"] and len(m) == 5 and m.process(P(3))["label"] == "B2"  # type: ignore[index]
    # exit twice: the second is a no-op
    assert [c.kind for c in feed(m, [ev("exit", 12, pid=P(4), reason="boom", reason_kind="exception")])] == ["exit"]
    assert feed(m, [ev("exit", 13, pid=P(4), reason="boom", reason_kind="exception")]) == []
    assert P(4) not in m
    # link to a dead pid: ignored
    assert feed(m, [ev("link", 14, a=P(2), b=P(4))]) == []


def test_spawn_register_update_suspend_resume() -> None:
    m = small_tree()
    feed(
        m,
        [
            ev(
                "spawn",
                11,
                pid=P(30),
                name=None,
                label="late",
                parent=P(1),
                supervisor=P(1),
                child_id="d",
                kind="worker",
                restarts=0,
            ),
            ev("register", 12, name="late_one", pid=P(30)),
            ev("suspend", 13, pid=P(30)),
        ],
    )
    d = m.process(P(30))
    assert d is not None
    assert d["name"] == "late_one" and d["status"] == "suspended" and d["path"] == [P(1), P(30)]
    assert d["trap_exit"] is None  # unknown: spawn events do not carry it
    assert m.names()["late_one"] == P(30)
    feed(m, [ev("resume", 14, pid=P(30)), ev("register", 15, name="late_one", pid=None)])
    d = m.process(P(30))
    assert d is not None and d["status"] == "waiting" and d["name"] is None and "late_one" not in m.names()
    # an update moving it under another supervisor moves the sup edge
    feed(m, [ev("update", 16, pid=P(30), supervisor=P(9), child_id="x")])
    assert m.path_to_root(P(30)) == [P(9), P(30)]
    assert P(30) not in m.process(P(1))["children"]  # type: ignore[index]


def test_restart_history_follows_the_child_to_its_new_pid() -> None:
    m = small_tree()
    pid, seq = P(3), 11
    for i in range(25):
        new = P(100 + i)
        feed(
            m,
            [
                ev("exit", seq, pid=pid, reason="boom", reason_kind="exception"),
                ev("spawn", seq + 1, pid=new, label="B", parent=P(1), supervisor=P(1), child_id="b", restarts=i + 1),
                ev("restart", seq + 2, supervisor=P(1), child_id="b", old_pid=pid, new_pid=new, restarts=i + 1),
            ],
        )
        pid, seq = new, seq + 3
    d = m.process(pid)
    assert d is not None
    hist = d["restart_history"]
    assert len(hist) == 20  # the last N
    assert hist[-1]["new_pid"] == pid and hist[-1]["restarts"] == 25 and hist[0]["restarts"] == 6
    assert d["restarts"] == 25
    # the rest_for_one/one_for_all order is kept by child id, not by pid
    assert m.process(P(1))["children"] == [P(2), pid, P(4)]  # type: ignore[index]


def test_samples_give_message_rates_and_node_series() -> None:
    m = small_tree()
    feed(
        m,
        [
            {
                "t": "samples",
                "rows": [[P(2), 0, 0, 0, 0, 0.0, "waiting"]],
                "node": {"time": 100.0, "process_count": 5, "messages": 0, "restarts": 0, "loop_lag_ms": 1.5},
            }
        ],
    )
    feed(
        m,
        [
            {
                "t": "samples",
                "rows": [[P(2), 3, 10, 1, 7, 0.25, "running"], [P(4), 9, 9, 0, 0, 0.0, "waiting"]],
                "node": {"time": 102.0, "process_count": 5, "messages": 10, "restarts": 4, "loop_lag_ms": 7.0},
            }
        ],
    )
    d = m.process(P(2))
    assert d is not None
    assert d["rate"] == 5.0 and d["mailbox"] == 3 and d["handled"] == 7 and d["status"] == "running"
    s = m.series()
    assert s["message_rate"] == [[102.0, 5.0]] and s["restart_rate"] == [[102.0, 2.0]]
    assert s["loop_lag_ms"][-1] == [102.0, 7.0] and s["process_count"][-1] == [102.0, 5]
    assert s["top_mailboxes"][-1] == [102.0, [[P(4), "C", 9], [P(2), "A", 3]]]
    # the summary (what each live batch carries as stats) has the latest of them
    summary = m.summary()
    assert summary["top_mailboxes"] == [[P(4), "C", 9], [P(2), "A", 3]] and summary["time"] == 102.0
    # a process missing from the next sample received nothing
    feed(
        m,
        [
            {
                "t": "samples",
                "rows": [],
                "node": {"time": 103.0, "process_count": 5, "messages": 0, "restarts": 4, "loop_lag_ms": 0.1},
            }
        ],
    )
    assert m.process(P(2))["rate"] == 0.0  # type: ignore[index]
    assert m.summary()["loop_lag_ms"] == 0.1
    top = m.processes(sort="rate", desc=True, limit=1)
    assert top["rows"][0]["rate"] == 0.0


def test_samples_carry_memory_and_the_table_sorts_by_it() -> None:
    m = small_tree()
    # 8 columns (memory last); a row of the older 7 columns leaves memory unknown
    rows = [
        [P(2), 0, 0, 0, 0, 0.0, "waiting", 4096],
        [P(4), 0, 0, 0, 0, 0.0, "waiting", 900],
        [P(1), 0, 0, 0, 0, 0.0, "waiting"],
    ]
    feed(m, [{"t": "samples", "rows": rows, "node": {"time": 1.0, "process_count": 5, "messages": 0}}])
    assert m.process(P(2))["memory"] == 4096  # type: ignore[index]
    assert m.process(P(1))["memory"] is None  # type: ignore[index]
    top = m.processes(sort="memory", desc=True, limit=3)["rows"]
    assert [r["pid"] for r in top[:2]] == [P(2), P(4)]
    # a later row without a figure keeps the last one
    feed(m, [{"t": "samples", "rows": [[P(2), 1, 1, 0, 0, 0.0, "waiting", None]], "node": None}])
    assert m.process(P(2))["memory"] == 4096  # type: ignore[index]


def test_series_window_drops_old_points() -> None:
    m = NodeModel("n", series_window=10.0)
    feed(m, snapshot([rec(P(1))]))
    for t in range(100):
        feed(
            m,
            [
                {
                    "t": "samples",
                    "rows": [],
                    "node": {"time": float(t), "process_count": 1, "messages": 0, "restarts": 0, "loop_lag_ms": 0},
                }
            ],
        )
    pts = m.series()["process_count"]
    assert pts[0][0] >= 89.0 and pts[-1][0] == 99.0


def test_disconnect_keeps_the_last_picture_marked_stale() -> None:
    m = small_tree()
    m.disconnected("agent gone")
    s = m.summary()
    assert s["status"] == "down" and s["reason"] == "agent gone" and s["process_count"] == 5
    t = m.tree()
    assert t["stale"] is True and t["status"] == "down"
    m.connected({"node": {"node_id": 7}}, {"session": "s", "role": "read", "commands": ["ping"]})
    assert m.summary()["status"] == "syncing"


def test_gap_and_loop_blocked_are_reported() -> None:
    m = small_tree()
    ch = feed(
        m,
        [
            {"t": "gap", "dropped": 42},
            ev(
                "loop_blocked",
                11,
                pid=P(2),
                name=None,
                blocked_ms=150.0,
                stack=[{"function": "f", "file": "x.py", "line": 1}],
            ),
        ],
    )
    assert [c.kind for c in ch] == ["gap", "loop_blocked"]
    s = m.summary()
    assert s["gaps"] == 1 and s["events_dropped"] == 42 and s["blocked"]["pid"] == P(2)
    feed(m, [ev("loop_unblocked", 12, blocked_ms=300.0)])
    assert m.summary()["blocked"] is None


# -- tree and layout --------------------------------------------------------------------------------


def big_sup_tree(n: int = 1000) -> NodeModel:
    m = NodeModel("n")
    recs = [sup(P(1), name="sessions")]
    for i in range(n):
        recs.append(
            rec(
                P(10 + i),
                supervisor=P(1),
                label="SessionWorker",
                mailbox=i % 3,
                restarts=i % 2,
                status="running" if i % 10 == 0 else "waiting",
            )
        )
    recs.append(rec(P(5), supervisor=P(1), child_id="registry", label="Registry"))
    recs.append(rec(P(6), label="loner"))
    feed(m, snapshot(linked(recs)))
    return m


def test_tree_groups_1000_identical_children_unless_expanded() -> None:
    m = big_sup_tree()
    t = m.tree(group_threshold=20)
    assert t["id"] == "node" and [c["id"] for c in t["children"]] == [P(1), P(6)]
    kids = t["children"][0]["children"]
    assert len(kids) == 2
    registry = next(k for k in kids if not k.get("group"))
    group = next(k for k in kids if k.get("group"))
    assert registry["pid"] == P(5)
    assert group["label"] == "SessionWorker" and group["count"] == 1000
    assert group["mailbox_total"] == sum(i % 3 for i in range(1000))
    assert group["restarts_total"] == 500
    assert group["status_counts"] == {"running": 100, "waiting": 900}
    assert group["key"] == f"{P(1)}/SessionWorker"
    expanded = m.tree(group_threshold=20, expanded={group["key"]})
    assert len(expanded["children"][0]["children"]) == 1001
    assert m.tree(group_threshold=2000)["children"][0]["children"][0]["pid"] == P(5)  # spec order: registry first


def test_a_big_tree_is_sent_with_its_leaf_only_supervisors_folded_unless_expanded() -> None:
    # 1 root, 30 shards of 100 workers (labels that do not group), one shard with a sub-supervisor
    m = NodeModel("n")
    recs = [sup(P(1), name="root")]
    n = 2
    for g in range(30):
        shard = P(n)
        recs.append(sup(shard, supervisor=P(1), child_id=f"g{g}", label=f"Shard{g}"))
        n += 1
        for i in range(100):
            st = "running" if i < 3 else "waiting"
            w = rec(P(n), supervisor=shard, child_id=f"w{i}", label=f"W{i % 10}", status=st, mailbox=1, restarts=2)
            recs.append(w)
            n += 1
    inner = P(n)
    recs.append(sup(inner, supervisor=P(2), child_id="inner", label="Inner"))  # shard 0 is not leaf-only
    recs.append(rec(P(n + 1), supervisor=inner, child_id="x", label="X"))
    feed(m, snapshot(linked(recs)))
    whole = m.tree()
    assert sum(1 for _ in _walk(whole)) == len(recs) + 1  # fold=0: everything, as before
    t = m.tree(fold=20)
    shards = t["children"][0]["children"]
    folded = [s for s in shards if s.get("folded")]
    assert len(folded) == 29 and all(s["children"] == [] for s in folded)
    assert folded[0] == {
        **folded[0],
        "folded": 100,
        "folded_status_counts": {"running": 3, "waiting": 97},
        "folded_mailbox_total": 100,
        "folded_restarts_total": 200,
    }
    assert shards[0]["pid"] == P(2) and "folded" not in shards[0] and len(shards[0]["children"]) == 101
    assert sum(1 for _ in _walk(t)) == 2 + 30 + 101 + 1  # node, root, shards, shard 0's children, inner's child
    # a folded supervisor's pid in `expanded` sends its children
    opened = m.tree(fold=20, expanded={folded[3]["pid"]})
    again = next(s for s in opened["children"][0]["children"] if s["pid"] == folded[3]["pid"])
    assert "folded" not in again and len(again["children"]) == 100
    # a small tree is sent whole whatever `fold` says
    small = NodeModel("s")
    feed(small, snapshot(linked(recs[:102])))
    assert not any(d.get("folded") for d in _walk(small.tree(fold=20)))


def _walk(tree: dict[str, Any]) -> Any:
    stack = [tree]
    while stack:
        d = stack.pop()
        yield d
        stack.extend(d.get("children") or ())


def _check_layout(tree: dict[str, Any], layout: dict[str, Any]) -> None:
    pos = layout["nodes"]
    by_depth: dict[float, list[float]] = defaultdict(list)
    stack = [tree]
    count = 0
    while stack:
        n = stack.pop()
        count += 1
        p = pos[n["id"]]
        by_depth[p["y"]].append(p["x"])
        kids = n.get("children") or []
        if kids:
            first, last = pos[kids[0]["id"]]["x"], pos[kids[-1]["id"]]["x"]
            assert p["x"] == pytest.approx((first + last) / 2)  # centred over its children
            assert all(pos[k["id"]]["y"] == p["y"] + 1 for k in kids)
        stack.extend(kids)
    assert count == len(pos)
    for xs in by_depth.values():
        xs.sort()
        assert all(b - a >= 1 - 1e-9 for a, b in itertools.pairwise(xs))  # no overlap at one depth


def test_tidy_layout_of_a_random_10000_node_tree() -> None:
    rnd = random.Random(7)
    nodes = [{"id": "n0", "children": []}]
    for i in range(1, 10_000):
        parent = nodes[int(rnd.random() ** 3 * i)]  # skewed: some wide, some deep
        child: dict[str, Any] = {"id": f"n{i}", "children": []}
        parent["children"].append(child)
        nodes.append(child)
    layout = tidy_layout(nodes[0])
    assert len(layout["nodes"]) == 10_000
    _check_layout(nodes[0], layout)


def test_tidy_layout_of_a_deep_chain_and_of_the_model_tree() -> None:
    root: dict[str, Any] = {"id": "c0", "children": []}
    cur = root
    for i in range(1, 10_000):
        nxt: dict[str, Any] = {"id": f"c{i}", "children": []}
        cur["children"].append(nxt)
        cur = nxt
    layout = tidy_layout(root)
    assert layout["height"] == 9999 and layout["width"] == 0
    m = big_sup_tree(100)
    t = m.tree(expanded={f"{P(1)}/SessionWorker"})
    _check_layout(t, tidy_layout(t))


# -- process table ------------------------------------------------------------------------------------


def test_processes_sort_filter_and_paging() -> None:
    rnd = random.Random(3)
    m = NodeModel("n")
    recs = [sup(P(1), name="root_sup")]
    for i in range(2, 60):
        recs.append(
            rec(
                P(i),
                supervisor=P(1) if i % 2 else None,
                name=f"w{i}" if i % 3 == 0 else None,
                label=rnd.choice(["Alpha", "beta", "Gamma"]),
                mailbox=rnd.randrange(50),
                handler_time=rnd.random(),
                restarts=rnd.randrange(4),
                status=rnd.choice(["waiting", "running"]),
            )
        )
    feed(m, snapshot(linked(recs)))
    m.merge_info(P(7), {"memory": 5000})
    m.merge_info(P(8), {"memory": 100})
    all_rows = m.processes(limit=1000)["rows"]
    assert [r["pid"] for r in all_rows] == sorted((r["pid"] for r in recs), key=pid_key)  # pid order is numeric
    for key in ("mailbox", "handler_time", "restarts"):
        got = m.processes(sort=key, desc=True, limit=1000)["rows"]
        vals = [r[key] for r in got]
        assert vals == sorted(vals, reverse=True)
    mem = m.processes(sort="memory", desc=True, limit=1000)["rows"]
    assert [r["memory"] for r in mem[:3]] == [5000, 100, None]  # unknown last
    names = [(r["name"] or r["label"]).lower() for r in m.processes(sort="name", limit=1000)["rows"]]
    assert names == sorted(names)
    kids = m.processes(supervisor=P(1), limit=1000)
    assert kids["total"] == sum(1 for r in recs if r["supervisor"] == P(1))
    running = m.processes(status="running", limit=1000)
    assert running["total"] == sum(1 for r in recs if r["status"] == "running")
    alpha = m.processes(filter_name="ALPHA", limit=1000)
    assert alpha["total"] == sum(1 for r in recs if r["label"] == "Alpha")
    assert m.processes(filter_name="<0.12.", limit=10)["rows"][0]["pid"] == P(12)
    page = m.processes(sort="mailbox", desc=True, offset=10, limit=5)
    assert page["total"] == len(recs) and len(page["rows"]) == 5
    full = m.processes(sort="mailbox", desc=True, limit=1000)["rows"]
    assert [r["pid"] for r in page["rows"]] == [r["pid"] for r in full[10:15]]
    with pytest.raises(ValueError):
        m.processes(sort="password")


def test_processes_with_100000_rows() -> None:
    m = NodeModel("n")
    recs = [rec(P(i), mailbox=(i * 7919) % 1000, msgs_in=i) for i in range(1, 100_001)]
    feed(m, snapshot(recs))
    res = m.processes(sort="mailbox", desc=True, limit=50)
    assert res["total"] == 100_000
    assert all(r["mailbox"] == 999 for r in res["rows"])
    assert m.processes(sort="pid", desc=True, limit=1)["rows"][0]["pid"] == P(100_000)
    assert m.processes(filter_name="<0.99999.", limit=5)["total"] == 1


def test_search_and_path_to_root() -> None:
    m = NodeModel("n")
    recs = linked(
        [
            sup(P(1), name="app"),
            sup(P(2), supervisor=P(1), child_id="pool", label="PoolSup"),
            rec(P(3), supervisor=P(2), child_id="conn1", name="db_conn_1", label="DbConn"),
            rec(P(4), supervisor=P(2), child_id="conn2", label="DbConn"),
        ]
    )
    feed(m, snapshot(recs))
    assert m.path_to_root(P(3)) == [P(1), P(2), P(3)]
    assert m.path_to_root(P(99)) == []
    hits = m.search("dbconn")
    assert [h["pid"] for h in hits] == [P(3), P(4)]  # named first
    assert hits[0]["path"] == [P(1), P(2), P(3)]
    assert [h["pid"] for h in m.search("conn2")] == [P(4)]  # child id
    assert m.search("  ") == []


# -- kill preview ------------------------------------------------------------------------------------------


def test_kill_preview_one_for_one() -> None:
    p = small_tree("one_for_one").kill_preview(P(3))
    assert p["target_dies"] and p["down"] == [P(3)] and p["linked_down"] == []
    assert p["restarts"] == [p["restarts"][0]]
    r = p["restarts"][0]
    assert r["supervisor"] == P(1) and r["strategy"] == "one_for_one" and r["restarted"] == [P(3)]
    assert p["gives_up"] == [] and p["escalation"] == [] and p["is_supervisor"] is False
    assert p["budget"] == {"used": 0, "intensity": 3, "period": 5.0, "strategy": "one_for_one"}


def test_kill_preview_one_for_all() -> None:
    p = small_tree("one_for_all").kill_preview(P(3))
    assert set(p["down"]) == {P(2), P(3), P(4)}
    assert p["restarts"][0]["restarted"] == [P(2), P(3), P(4)]
    assert P(9) not in p["down"]


def test_kill_preview_rest_for_one_follows_start_order() -> None:
    m = small_tree("rest_for_one")
    p = m.kill_preview(P(3))
    assert set(p["down"]) == {P(3), P(4)} and p["restarts"][0]["restarted"] == [P(3), P(4)]
    # the order is the child spec order, not pid order: reorder and ask again
    m.set_child_order(P(1), ["c", "b", "a"])
    p = m.kill_preview(P(3))
    assert set(p["down"]) == {P(3), P(2)}


def test_kill_preview_link_chain_without_and_with_trap_exit() -> None:
    def chain(trap_middle: bool) -> NodeModel:
        m = NodeModel("n")
        recs = [
            rec(P(1), links=[P(2)]),
            rec(P(2), links=[P(1), P(3)], trap_exit=trap_middle),
            rec(P(3), links=[P(2), P(4)]),
            rec(P(4), links=[P(3)]),
            rec(P(5)),
        ]
        feed(m, snapshot(recs))
        return m

    p = chain(False).kill_preview(P(1))
    assert p["down"] == [P(1), P(2), P(3), P(4)] and p["linked_down"] == [P(2), P(3), P(4)]
    p = chain(True).kill_preview(P(1))
    assert p["down"] == [P(1)] and p["notified"] == [P(2)]
    # a trapping target survives anything but kill
    p = chain(True).kill_preview(P(2), reason="shutdown")
    assert p["target_dies"] is False and p["down"] == [] and p["notified"] == [P(2)]
    p = chain(True).kill_preview(P(2), reason="kill")
    assert p["target_dies"] is True and set(p["down"]) == {P(2), P(1), P(3), P(4)}
    # normal does nothing to a non-trapping process
    assert chain(False).kill_preview(P(1), reason="normal")["down"] == []


def test_kill_preview_budget_exhaustion_escalates() -> None:
    def tree(top_intensity: int) -> NodeModel:
        m = NodeModel("n")
        recs = linked(
            [
                sup(P(1), "one_for_one", top_intensity, 0, name="top"),
                sup(P(2), "one_for_one", 1, 1, supervisor=P(1), child_id="mid"),
                rec(P(3), supervisor=P(2), child_id="x"),
                rec(P(4), supervisor=P(2), child_id="y"),
                rec(P(5), supervisor=P(1), child_id="z"),
            ]
        )
        feed(m, snapshot(recs))
        return m

    p = tree(5).kill_preview(P(3))
    assert p["escalation"] == [P(2)]
    assert p["gives_up"][0] == {
        "supervisor": P(2),
        "name": "Supervisor",
        "used": 1,
        "intensity": 1,
        "period": 5.0,
        "trigger": P(3),
    }
    assert set(p["down"]) == {P(2), P(3), P(4)}
    assert [(r["supervisor"], r["restarted"]) for r in p["restarts"]] == [(P(1), [P(2)])]
    p = tree(0).kill_preview(P(3))
    assert p["escalation"] == [P(2), P(1)]
    assert set(p["down"]) == {P(1), P(2), P(3), P(4), P(5)} and p["restarts"] == []


def test_kill_preview_of_a_supervisor_takes_its_subtree() -> None:
    m = NodeModel("n")
    recs = linked(
        [
            sup(P(1), name="top"),
            sup(P(2), supervisor=P(1), child_id="mid"),
            rec(P(3), supervisor=P(2), child_id="x"),
            sup(P(4), supervisor=P(2), child_id="inner"),
            rec(P(5), supervisor=P(4), child_id="deep"),
        ]
    )
    feed(m, snapshot(recs))
    p = m.kill_preview(P(2))
    assert p["is_supervisor"] and p["subtree"] == [P(3), P(4), P(5)]
    assert set(p["down"]) == {P(2), P(3), P(4), P(5)}
    assert p["restarts"][0]["supervisor"] == P(1)
    assert m.kill_preview(P(77))["exists"] is False


def test_kill_preview_warns_about_unknown_trap_exit() -> None:
    m = small_tree()
    feed(m, [ev("spawn", 11, pid=P(40), label="late", kind="worker"), ev("link", 12, a=P(40), b=P(9))])
    p = m.kill_preview(P(9))
    assert set(p["down"]) == {P(9), P(40)}
    assert any("trap_exit" in w for w in p["warnings"])


# -- threads ----------------------------------------------------------------------------------------------


def test_readers_and_a_writer_in_parallel() -> None:
    m = big_sup_tree(2000)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        seq = 100
        try:
            for i in range(600):
                pid = P(50_000 + i)
                feed(
                    m,
                    [
                        ev("spawn", seq, pid=pid, label="SessionWorker", supervisor=P(1), parent=P(1)),
                        ev("link", seq + 1, a=pid, b=P(1)),
                    ],
                )
                if i % 2:
                    feed(m, [ev("exit", seq + 2, pid=pid, reason="x", reason_kind="other")])
                seq += 3
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                m.processes(sort="mailbox", desc=True, limit=20)
                m.tree()
                m.summary()
                m.search("Session", limit=5)
                m.kill_preview(P(5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert len(m) == 2003 + 300


def test_recent_events_keep_a_flag_not_the_crash_report() -> None:
    m = small_tree()
    report = {"exception": "ValueError", "state": {"blob": "x" * 50_000}}
    feed(m, [ev("exit", 100, pid=P(2), reason="boom", reason_kind="exception", report=report)])
    (last,) = m.recent_events(kinds=["exit"])
    assert last["report"] is True and last["reason"] == "boom"


def test_readers_see_one_whole_picture_or_the_other_while_snapshots_are_built() -> None:
    pictures = [
        linked([sup(P(1), name="a"), *(rec(P(i), supervisor=P(1), label="W") for i in range(2, 3000))]),
        linked([sup(P(5000), name="b"), *(rec(P(i), supervisor=P(5000), label="V") for i in range(5001, 5500))]),
    ]
    whole = [{r["pid"] for r in recs} for recs in pictures]
    m = NodeModel("n")
    feed(m, snapshot(pictures[0], seq=1))
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[int] = set()

    def reader() -> None:
        try:
            while not stop.is_set():
                pids = m.pids()
                assert pids in whole, f"a mixed picture of {len(pids)} processes"
                seen.add(whole.index(pids))
                top = m.tree(group_threshold=10)["children"]
                assert len(top) == 1 and top[0]["children"][0]["count"] in (2998, 499)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(2, 12):
            feed(m, snapshot(pictures[i % 2], seq=i, chunk=500))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[0]
    assert m.pids() == whole[1] and seen  # the last snapshot won; the readers read meanwhile


def test_a_big_nodes_counts_are_walked_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    # every live batch asks for the summary; its counts walk every process: on a big node
    # (here "big" is 5 processes: 1 s each) they may be a while old, on a small one 1 s at most
    clock = [1000.0]
    monkeypatch.setattr(node_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0], time=time.time))
    m = small_tree()
    assert m.summary()["status_counts"] == {"waiting": 5}
    feed(m, [ev("suspend", 11, pid=P(2))])
    clock[0] += 1.3
    assert m.summary()["status_counts"] == {"waiting": 4, "suspended": 1}  # small: 1 s (+25 %) old at most
    monkeypatch.setattr(node_module, "AGGREGATE_AGE_PER_PROCESS", 1.0)
    clock[0] += 1.3
    m.summary()  # counted afresh, good for 5 processes x 1 s, 0.75-1.25 of it (nodes drift apart)
    assert m._agg is not None and 1000.0 + 2.6 + 3.75 <= m._agg[0] <= 1000.0 + 2.6 + 6.25
    feed(m, [ev("suspend", 12, pid=P(3))])
    clock[0] += 3.7
    assert m.summary()["status_counts"] == {"waiting": 4, "suspended": 1}
    assert m.summary()["process_count"] == 5  # the count itself is always fresh
    clock[0] += 2.6
    assert m.summary()["status_counts"] == {"waiting": 3, "suspended": 2}

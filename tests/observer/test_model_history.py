"""Time travel and the live model agree: the tree history replays for an instant is the tree seen live then.

A toy node (a true process table and the messages its agent would send:
spawns, exits, restarts, links, monitors, registrations, updates, gaps with a
resync, reconnects, stale and repeated events) feeds a live
:class:`NodeModel` and a real :class:`HistoryStore` on a SQLite file, the way
an attachment does. After every message the live tree is kept with the time;
afterwards ``tree_at`` must draw exactly the same tree for each of those times.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from observer.model import NodeModel, build_tree, checkpoint, history, pid_key, replay, restore
from observer.model.records import DEFAULTS
from observer.store import HistoryStore
from tests.observer import ev, linked, rec, snapshot, sup

THRESHOLD = 3
"""Small, so that groups form (and come apart) in short streams."""
LABELS = ("A", "B", "C")
NAMES = ("alpha", "beta")
HELLO_NODE = {"node_id": "toy@host", "pid": 4242}
BUDGET = {"used": 0, "intensity": 3, "period": 5.0, "strategy": "one_for_one"}

OPS = (
    "spawn",
    "spawn",
    "spawn",
    "exit",
    "restart",
    "restart",
    "link",
    "unlink",
    "monitor",
    "demonitor",
    "register",
    "suspend",
    "resume",
    "update",
    "gave_up",
    "gap",
    "resync",
    "disconnect",
    "connect",
    "repeat",
)


class ToyNode:
    """The truth, and the messages an agent attached to it sends (``out``)."""

    def __init__(self) -> None:
        self.procs: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}
        self.seq = 0
        self.pids = itertools.count(1)
        self.cids = itertools.count(1)
        self.out: list[tuple[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.connected = False
        self.dropping = 0
        self.dropped = 0

    # -- the truth -------------------------------------------------------------------------------

    def new_pid(self) -> str:
        return f"<0.{next(self.pids)}.0>"

    def emit(self, what: str, /, **fields: Any) -> None:
        self.seq += 1
        msg = ev(what, self.seq, **fields)
        if not self.connected:
            return  # nobody listens
        if self.dropping:
            self.dropped += 1  # the agent drops it under load
            return
        self.sent.append(msg)
        self.out.append(("msg", msg))

    def pick(self, i: int, *, where: Any = None) -> str | None:
        pool = sorted(p for p, r in self.procs.items() if where is None or where(r))
        return pool[i % len(pool)] if pool else None

    def spawn(self, sup_pid: str | None, i: int, *, child_id: str | None = None, restarts: int = 0) -> str:
        pid = self.new_pid()
        is_sup = i % 4 == 0
        r = rec(
            pid,
            label="Sup" if is_sup else LABELS[i % len(LABELS)],
            kind="supervisor" if is_sup else "worker",
            trap_exit=is_sup,
            supervisor=sup_pid,
            parent=sup_pid,
            child_id=child_id if child_id is not None else (f"c{next(self.cids)}" if sup_pid else None),
            restarts=restarts,
            budget=dict(BUDGET) if is_sup else None,
            status="running",
        )
        self.procs[pid] = r
        meta = {k: r[k] for k in ("name", "label", "supervisor", "child_id", "kind", "restarts", "trap_exit", "budget")}
        self.emit("spawn", pid=pid, parent=sup_pid, **meta)
        if sup_pid:
            self.link(pid, sup_pid)
        return pid

    def link(self, a: str, b: str, on: bool = True) -> None:
        ra, rb = self.procs[a], self.procs[b]
        if on and b not in ra["links"] and a != b:
            ra["links"].append(b)
            rb["links"].append(a)
            self.emit("link", a=a, b=b)
        elif not on and b in ra["links"]:
            ra["links"].remove(b)
            rb["links"].remove(a)
            self.emit("unlink", a=a, b=b)

    def exit(self, pid: str, reason_kind: str = "killed") -> None:
        for child in [p for p, r in self.procs.items() if r["supervisor"] == pid]:
            if child in self.procs:
                self.exit(child, "shutdown")
        r = self.procs.pop(pid)
        for other in r["links"]:
            self.procs[other]["links"].remove(pid)
        for o in self.procs.values():
            o["monitors"] = [m for m in o["monitors"] if m != pid]
        for n in [n for n, p in self.names.items() if p == pid]:
            del self.names[n]
        crash = {"exception": "ValueError", "traceback": "Traceback...\nValueError: boom"}
        self.emit(
            "exit",
            pid=pid,
            name=r["name"],
            label=r["label"],
            reason="boom" if reason_kind == "exception" else reason_kind,
            reason_kind=reason_kind,
            **(crash if reason_kind == "exception" else {}),
        )

    def send_snapshot(self, *, interleave: bool) -> None:
        recs = [json.loads(json.dumps(r)) for r in self.procs.values()]
        msgs = snapshot(recs, seq=self.seq, names=dict(self.names), chunk=3)
        msgs[0]["node"] = dict(HELLO_NODE)
        self.out.extend(("msg", m) for m in msgs[:-1])
        if interleave and len(self.procs) >= 2:  # an event between the chunks and the end
            a, b = sorted(self.procs)[:2]
            self.link(a, b, on=b not in self.procs[a]["links"])
        self.out.append(("msg", msgs[-1]))

    # -- operations ------------------------------------------------------------------------------

    def op(self, what: str, i: int, j: int) -> None:
        if what == "spawn":
            self.spawn(self.pick(i, where=lambda r: r["kind"] == "supervisor") if j % 4 else None, j)
        elif what == "exit":
            pid = self.pick(i)
            if pid:
                self.exit(pid, "exception" if j % 2 else "killed")
        elif what == "restart":
            pid = self.pick(i, where=lambda r: r["supervisor"] in self.procs)
            if pid:
                old = self.procs[pid]
                sup_pid, cid, n = old["supervisor"], old["child_id"], old["restarts"] + 1
                self.exit(pid, "exception")
                new = self.spawn(sup_pid, j, child_id=cid, restarts=n)
                self.emit("restart", supervisor=sup_pid, child_id=cid, old_pid=pid, new_pid=new, restarts=n)
        elif what in ("link", "unlink"):
            a, b = self.pick(i), self.pick(j)
            if a and b:
                self.link(a, b, on=what == "link")
        elif what in ("monitor", "demonitor"):
            w, t = self.pick(i), self.pick(j)
            if w and t and (what == "monitor" or t in self.procs[w]["monitors"]):
                if what == "monitor":
                    self.procs[w]["monitors"].append(t)
                else:
                    self.procs[w]["monitors"].remove(t)
                self.emit(what, watcher=w, target=t, ref=f"#Ref<{i}.{j}>")
        elif what == "register":
            name, pid = NAMES[i % 2], self.pick(j) if j % 3 else None
            if pid is None or name not in self.names:
                old = self.names.pop(name, None)
                if old in self.procs:
                    self.procs[old]["name"] = None
                if pid is not None:
                    self.names[name] = pid
                    self.procs[pid]["name"] = name
                self.emit("register", name=name, pid=pid)
        elif what in ("suspend", "resume"):
            pid = self.pick(i)
            if pid:
                self.procs[pid]["status"] = "suspended" if what == "suspend" else "waiting"
                self.emit(what, pid=pid)
        elif what == "update":
            pid = self.pick(i)
            if pid:
                r = self.procs[pid]
                r["label"] = LABELS[j % len(LABELS)]
                meta = {k: r[k] for k in ("name", "label", "supervisor", "child_id", "kind", "restarts", "trap_exit")}
                self.emit("update", pid=pid, **meta, budget=r["budget"])
        elif what == "gave_up":
            pid = self.pick(i, where=lambda r: r["kind"] == "supervisor")
            if pid:
                self.emit("gave_up", supervisor=pid, child_id="c1", restarts=4, intensity=3, period=5.0)
        elif what == "gap" and self.connected and not self.dropping:
            self.dropping = 1 + j % 3  # the next few operations' events are lost
        elif what == "resync" and self.connected:
            self.send_snapshot(interleave=j % 2 == 0)
        elif what == "disconnect" and self.connected:
            self.connected = False
            self.dropping = 0
            self.out.append(("down", f"connection lost ({i})"))
        elif what == "connect" and not self.connected:
            self.connect(interleave=j % 2 == 0)
        elif what == "repeat" and self.sent:
            self.out.append(("msg", dict(self.sent[i % len(self.sent)])))  # stale or repeated: idempotent
        if what not in ("gap",) and self.dropping:
            self.dropping -= 1
            if not self.dropping and self.connected:
                self.out.append(("msg", {"t": "gap", "dropped": self.dropped}))
                self.dropped = 0
                self.send_snapshot(interleave=False)

    def connect(self, *, interleave: bool = False) -> None:
        self.connected = True
        self.out.append(("up", None))
        self.send_snapshot(interleave=interleave)

    def seed(self) -> None:
        """A small tree to start from, as in the first snapshot."""
        top = self.new_pid()
        self.procs[top] = sup(top, name="top", status="running")
        self.names["top"] = top
        for k in range(4):
            pid = self.new_pid()
            self.procs[pid] = rec(pid, supervisor=top, child_id=f"s{k}", label=LABELS[k % 2])
        linked(list(self.procs.values()))


def deliver(model: NodeModel, store: HistoryStore, node: str, what: str, arg: Any) -> None:
    """What an attachment does with each message: record it, then apply it."""
    if what == "up":
        store.record(node, {"t": "status", "status": "up", "node": dict(HELLO_NODE), "session": "s1"})
        model.connected({"node": dict(HELLO_NODE)}, {"session": "s1", "role": "operator", "commands": ["kill"]})
    elif what == "down":
        store.record(node, {"t": "status", "status": "down", "reason": arg})
        model.disconnected(arg)
    else:
        if arg.get("t") == "ev":
            arg["time"] = time.time()
        store.record(node, arg)
        model.apply(arg)


def _after(t: float) -> None:
    """Let the wall clock move past ``t``, so the next message is stamped strictly later."""
    while time.time() <= t:
        pass


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HistoryStore]:
    # checkpoints every 4 messages and at each snapshot (never by the clock: the same stream, the same checkpoints)
    s = HistoryStore(
        str(tmp_path_factory.mktemp("history") / "history.db"), checkpoint_events=4, checkpoint_interval=1e9
    )
    yield s
    s.close()


_nodes = itertools.count()

ops = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 50), st.integers(0, 50)), min_size=10, max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_history_replays_the_tree_seen_live_at_every_instant(store: HistoryStore, ops: list[Any]) -> None:
    node = f"toy{next(_nodes)}"
    toy = ToyNode()
    toy.seed()
    toy.connect()
    for what, i, j in ops:
        toy.op(what, i, j)
    model = NodeModel(node)
    start = time.time()
    _after(start)
    seen: list[tuple[float, list[str], dict[str, Any], dict[str, str], list[str]]] = []
    for n, (what, arg) in enumerate(toy.out):
        deliver(model, store, node, what, arg)
        t = time.time()
        # now and then with some groups opened: "<sup pid>/<label>" (or "root/<label>")
        expand = [f"{p}/{lb}" for p in ["root", *sorted(model.pids())[:3]] for lb in LABELS] if n % 3 == 0 else []
        tree = model.tree(group_threshold=THRESHOLD, expanded=expand)
        seen.append((t, expand, tree, model.names(), sorted(model.pids())))
        _after(t)
    event(f"messages: {len(toy.out) // 25 * 25}+")
    event(f"processes at most: {max(len(s[4]) for s in seen) // 10 * 10}+")
    event(f"snapshots: {min(model.summary()['snapshots'], 3)}{'+' if model.summary()['snapshots'] >= 3 else ''}")
    assert store.flush()
    assert store.tree_at(node, start) is None  # nothing stored yet
    for n, (t, expand, tree, names, pids) in enumerate(seen):
        hist = store.tree_at(node, t, group_threshold=THRESHOLD, expanded=expand)
        assert hist is not None
        assert hist["tree"] == tree, f"after message {n} of {len(toy.out)}: {toy.out[n]}"
        assert hist["names"] == names
        assert [p["pid"] for p in hist["procs"]] == sorted(pids, key=pid_key)


# -- checkpoints ------------------------------------------------------------------------------------


def P(i: int) -> str:
    return f"<0.{i}.0>"


def test_a_checkpoint_restores_the_state_it_was_made_of() -> None:
    m = NodeModel("n")
    recs = linked(
        [
            sup(P(1), name="top"),
            rec(P(2), supervisor=P(1), child_id="b", label="W", monitors=[P(3), P(3)]),
            rec(P(3), supervisor=P(1), child_id="a", label="W"),
            rec(P(4), label="W", links=[P(2)]),
        ]
    )
    recs[1]["links"].append(P(4))
    msgs = [
        *snapshot(recs, seq=3, names={"top": P(1)}),
        ev("update", 4, pid=P(3), label="V", restarts=1),
        ev("spawn", 5, pid=P(9), label="W", supervisor=P(7), child_id="z"),  # its supervisor is not there
        ev("spawn", 6, pid=P(7), label="S", kind="supervisor"),
        ev("register", 7, name="nine", pid=P(9)),
        ev("unlink", 8, a=P(2), b=P(1)),  # a child joined to its supervisor by sup alone
        ev("monitor", 9, watcher=P(3), target=P(1)),  # ...by sup+link and a monitor
    ]
    m.apply_many(msgs)
    state = replay([(msg, 100.0) for msg in msgs])
    again = restore(json.loads(json.dumps(checkpoint(state))))
    assert json.loads(json.dumps(checkpoint(again))) == json.loads(json.dumps(checkpoint(state)))
    assert build_tree(again, "n", group_threshold=2) == m.tree(group_threshold=2)
    with m.locked() as g:
        assert sorted(g.edges(data=True)) == sorted(again.graph.edges(data=True))
        assert list(g.nodes) == list(again.graph.nodes)
    assert again.cid_order == {P(1): {"b": 0, "a": 1}}  # start order (pid order in the snapshot), kept
    assert not again.graph.has_edge(P(7), P(9))  # no sup edge to a supervisor that came later, as live
    assert sorted(checkpoint(state)["unpaired"]) == [P(2), P(3), P(9)]
    assert [c["id"] for c in m.tree()["children"]] == [P(1), P(4), P(7), P(9)]  # so it is drawn at the top


def test_the_checkpoint_json_encoded_in_slices_reads_as_the_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    kids = [rec(P(i), supervisor=P(1), child_id=f"c{i}", label="W") for i in range(2, 9)]
    recs = linked([sup(P(1), name="top"), *kids])
    recs[3]["links"].append(P(5))
    recs[5]["links"].append(P(3))
    state = replay([(m, 1.0) for m in snapshot(recs, seq=1, names={"top": P(1)})])
    monkeypatch.setattr(history, "JSON_SLICE", 3)  # several slices, one partial
    text = history.checkpoint_json(state)
    assert json.loads(text) == json.loads(json.dumps(checkpoint(state), default=str))
    assert len(json.loads(text)["procs"]) == 8 and json.loads(text)["edges"]
    assert json.loads(history.checkpoint_json(replay([]))) == json.loads(json.dumps(checkpoint(replay([]))))


def test_a_checkpoint_of_many_processes_is_encoded_in_slices_short_beside_the_switch_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # each slice is one C call holding the GIL: a slice of ~45 KB is ~1 ms, the attach manager's
    # switch interval, and a request thread sharing the GIL with the writer gets the GIL for a
    # switch interval per slice (2,000 records a slice, ~220 KB: a sixth of it)
    kids = [
        rec(P(i), supervisor=P(1), child_id=f"worker-{i}", label="Worker", started_at=1796567800.123 + i)
        for i in range(2, 1202)
    ]
    state = replay([(m, 1.0) for m in snapshot(linked([sup(P(1), name="top"), *kids]), seq=1)])
    sizes: list[int] = []
    encode = history._encode

    def measured(o: Any) -> str:
        text = encode(o)
        sizes.append(len(text))
        return text

    monkeypatch.setattr(history, "_encode", measured)
    pauses: list[int] = []
    text = history.checkpoint_json(state, lambda: pauses.append(len(sizes)))
    assert json.loads(text) == json.loads(json.dumps(checkpoint(state), default=str))
    assert len(sizes) >= 1 + 1201 // history.JSON_SLICE  # the head, then the records (and edges), sliced
    assert max(sizes[1:]) <= 16_000  # each slice ~1/3 of a switch interval or less
    assert pauses == sorted(set(pauses)) and len(pauses) >= len(sizes) - 1  # a pause after each slice


def test_a_checkpoint_keeps_each_record_whole_and_version_2_reads_the_same() -> None:
    kids = [rec(P(i), supervisor=P(1), child_id=f"c{i}", label="W", started_at=10.0 + i) for i in range(2, 6)]
    recs = linked([sup(P(1), name="top"), *kids])
    recs[2]["region"] = "eu"  # a key beyond FIELDS: the record's extra
    state = replay([(m, 1.0) for m in snapshot(recs, seq=1, names={"top": P(1)})])
    body = json.loads(history.checkpoint_json(state))
    assert body["v"] == history.CHECKPOINT_VERSION == 3 and len(body["procs"]) == 5
    assert body["extra"] == [[P(3), {"region": "eu"}]]
    again = restore(body)
    for pid, r in state.graph.nodes(data=True):
        assert dict(again.graph.nodes[pid]) == dict(r)
    assert list(again.graph.edges(data=True)) == list(state.graph.edges(data=True))
    # the same picture as a version 2 checkpoint (a dict per process without its default fields) reads alike
    old = {k: v for k, v in body.items() if k not in ("fields", "extra")} | {"v": 2}
    fields = body["fields"]
    old["procs"] = [{k: v for k, v in zip(fields, row, strict=True) if v != DEFAULTS[k]} for row in body["procs"]]
    old["procs"][2]["region"] = "eu"
    v2 = restore(old)
    assert [dict(r) for _, r in v2.graph.nodes(data=True)] == [dict(r) for _, r in again.graph.nodes(data=True)]
    assert list(v2.graph.edges(data=True)) == list(again.graph.edges(data=True))


def test_a_checkpoint_with_links_stored_both_ways_reads_as_one_link_per_supervised_pair() -> None:
    # written before a supervised pair's link was kept on the sup edge alone: the child's
    # link back to its supervisor listed (with a monitor), and the paired child implied
    body = json.loads(json.dumps(checkpoint(replay([]))))
    body["v"] = 2  # a version 2 body: a dict per process
    body["procs"] = [
        {"pid": P(1), "kind": "supervisor"},
        {"pid": P(2), "supervisor": P(1)},
        {"pid": P(3), "supervisor": P(1)},
    ]
    body["edges"] = [[P(1), P(3), 3], [P(3), P(1), 6]]
    body["unpaired"] = [P(3)]
    g = restore(body).graph
    assert g[P(1)][P(2)] == {"sup": True, "link": True, "kind": "sup"} and not g.has_edge(P(2), P(1))
    assert g[P(1)][P(3)] == {"sup": True, "link": True, "kind": "sup"}
    assert g[P(3)][P(1)] == {"monitor": 1, "kind": "monitor"}


def test_an_old_light_checkpoint_is_still_read(tmp_path: Path) -> None:
    path = str(tmp_path / "h.db")
    s = HistoryStore(path)
    s.record("n", {"t": "status", "status": "up"})
    assert s.flush()
    s.close()
    old = {
        "procs": [
            {"pid": P(1), "name": "top", "label": "Sup", "kind": "supervisor", "status": "running", "links": [P(2)]},
            {"pid": P(2), "label": "W", "supervisor": P(1), "child_id": "a", "links": [P(1)]},
        ],
        "names": {"top": P(1)},
    }
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO checkpoints (node, time, seq, event_id, count, json) VALUES ('n', ?, 5, 1, 2, ?)",
            (time.time(), json.dumps(old)),
        )
        conn.commit()
    s = HistoryStore(path)
    try:
        s.record("n", ev("spawn", 6, pid=P(3), label="W", supervisor=P(1), child_id="b", time=time.time() + 1))
        assert s.flush()
        res = s.tree_at("n", time.time() + 5)
        assert res is not None and res["names"] == {"top": P(1)}
        (top,) = res["tree"]["children"]
        assert top["pid"] == P(1) and [c["pid"] for c in top["children"]] == [P(2), P(3)]
    finally:
        s.close()


SAMPLED = ("status", "mailbox", "rate", "status_counts", "mailbox_total", "mailbox_max", "rate_total")


def structure(tree: dict[str, Any]) -> dict[str, Any]:
    """The tree without what samples add (history does not store samples)."""
    out = {k: v for k, v in tree.items() if k not in SAMPLED or tree.get("node")}
    out["children"] = [structure(c) for c in tree["children"]]
    return out


def test_samples_stay_live_only_and_the_structure_still_agrees(tmp_path: Path) -> None:
    s = HistoryStore(str(tmp_path / "h.db"))
    m = NodeModel("n")
    recs = linked([sup(P(1), name="top"), *(rec(P(i), supervisor=P(1), label="W") for i in range(2, 8))])
    now = time.time()
    msgs = [
        *snapshot(recs, seq=1),
        {"t": "samples", "rows": [[P(i), i, 10 * i, 0, 0, 0.0, "running"] for i in range(2, 8)], "node": None},
        ev("spawn", 2, pid=P(9), label="W", supervisor=P(1), child_id="n9", time=now),
        {"t": "samples", "rows": [[P(9), 3, 5, 0, 0, 0.0, "running"]], "node": {"time": now, "process_count": 7}},
    ]
    try:
        for msg in msgs:
            s.record("n", msg)
            m.apply(msg)
        assert s.flush()
        hist = s.tree_at("n", time.time() + 1, group_threshold=3)
        assert hist is not None
        live = m.tree(group_threshold=3)
        assert hist["tree"] != live  # mailboxes and statuses from samples are live-only...
        assert structure(hist["tree"]) == structure(live)  # ...the tree itself is the same
        assert live["children"][0]["children"][0]["mailbox_total"] == sum(range(2, 8)) + 3
    finally:
        s.close()

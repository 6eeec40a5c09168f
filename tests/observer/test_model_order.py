"""Process table sort orders: computed once, paged many times, ties by pid, unknown values last."""

from __future__ import annotations

import random
from typing import Any

import pytest

from observer.model import NodeModel, node
from observer.model.order import compute_order, page_pids
from observer.model.queries import SORT_KEYS
from observer.model.state import pid_key
from tests.observer import ev, rec, snapshot


def P(i: int) -> str:
    return f"<0.{i}.0>"


def table(n: int, seed: int = 1) -> NodeModel:
    rnd = random.Random(seed)
    m = NodeModel("n")
    recs = [
        rec(
            P(i),
            name=rnd.choice([None, "Alpha", "beta", "gamma"]),
            label=rnd.choice(["W", "w", "x"]),
            mailbox=rnd.randrange(4),
            memory=rnd.choice([None, 100, 200, 300]),
            started_at=float(rnd.randrange(10)),
            handler_time=rnd.randrange(1000) / 7,  # many distinct values: an index sort
            restarts=rnd.choice([0, 0, 0, 1, 5]),  # mostly 0: the zeros, then the others sorted
            # rate, msgs_in, ...: all 0, the pid order
        )
        for i in rnd.sample(range(1, 10 * n), n)
    ]
    for msg in snapshot(recs, seq=1):
        m.apply(msg)
    return m


def slow_order(m: NodeModel, sort: str, desc: bool) -> list[Any]:
    """What the table must show: a full sort, ties by pid (reversed with the rest when descending)."""
    rows = m.processes(sort="pid", limit=10**6, offset=0)["rows"]

    def key(r: dict[str, Any]) -> Any:
        if sort == "name":
            v: Any = (r["name"] or r["label"] or "").lower()
        elif sort in ("label", "status"):
            v = str(r[sort] or "").lower()
        elif sort == "pid":
            v = 0
        else:
            v = r[sort] or 0
        return (v, pid_key(r["pid"]))

    known = [r for r in rows if not (sort == "memory" and r["memory"] is None)]
    unknown = [r for r in rows if sort == "memory" and r["memory"] is None]
    known.sort(key=key, reverse=desc)
    return [r["pid"] for r in known + unknown]


@pytest.mark.parametrize("sort", SORT_KEYS)
def test_every_sort_key_pages_like_a_full_sort(sort: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "ORDER_MIN_ROWS", 0)  # the kept order, whatever the size
    m = table(300)
    for desc in (False, True):
        want = slow_order(m, sort, desc)
        got = [
            r["pid"]
            for off in range(0, 300, 70)
            for r in m.processes(sort=sort, desc=desc, offset=off, limit=70)["rows"]
        ]
        assert got == want, (sort, desc)


def test_a_kept_order_skips_exited_processes_and_sees_new_ones_later(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node, "ORDER_MIN_ROWS", 0)
    m = table(50)
    first = m.processes(sort="pid", limit=5)["rows"]
    m.apply(ev("exit", 2, pid=first[0]["pid"], reason="normal"))
    m.apply(ev("spawn", 3, pid=P(0), label="new"))
    page = m.processes(sort="pid", limit=5)
    assert [r["pid"] for r in page["rows"]] == [r["pid"] for r in first[1:]] + [page["rows"][-1]["pid"]]
    assert page["total"] == 50
    monkeypatch.setattr(node, "ORDER_MAX_AGE", 0.0)  # the next sort sees the newcomer
    assert m.processes(sort="pid", limit=1)["rows"][0]["pid"] == P(0)


def test_compute_order_on_plain_records() -> None:
    nodes = {P(3): {"mailbox": 1}, P(1): {"mailbox": 1}, P(2): {"mailbox": None}}
    o = compute_order(nodes, "mailbox")
    assert o.pids == [P(2), P(1), P(3)] and list(page_pids(o, True, 1)) == [P(1), P(2)]

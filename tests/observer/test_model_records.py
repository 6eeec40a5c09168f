"""The compact records: a slotted process record that reads as a mapping, shared edge flags."""

from __future__ import annotations

import json
import sys

import pytest

from observer.model.records import DEFAULTS, FIELDS, Proc, ProcGraph, edge_flags
from observer.model.snapshot import normalize, prepare
from observer.model.state import add_flag, link_pair, linked, remove_flag, set_edge, unlink_pair


def test_a_record_reads_as_its_defaults_until_set() -> None:
    rec = Proc()
    assert dict(rec) == DEFAULTS
    assert list(rec) == list(FIELDS) and len(rec) == len(FIELDS)
    assert rec["kind"] == "worker" and rec.get("status") == "waiting" and rec.get("nope", 7) == 7
    with pytest.raises(KeyError):
        rec["nope"]
    rec["mailbox"] = 3
    rec.update({"name": "n"}, extra=1)
    assert rec["mailbox"] == 3 and rec["name"] == "n" and rec["extra"] == 1 and "extra" in rec
    assert json.loads(json.dumps(dict(rec)))["extra"] == 1
    assert rec.pop("mailbox") == 3 and rec["mailbox"] == 0  # a field goes back to its default
    del rec["extra"]
    assert "extra" not in rec and rec == {**DEFAULTS, "name": "n"}


def test_string_values_are_interned() -> None:
    a, b = Proc(), Proc()
    s1 = "".join(["<0.", "4", "2.0>"])
    s2 = "".join(["<0.4", "2.0>"])
    assert s1 is not s2
    a["supervisor"], b["supervisor"] = s1, s2
    assert a["supervisor"] is b["supervisor"] is sys.intern(s1)


def test_edges_share_read_only_flags() -> None:
    g = ProcGraph()
    g.add_nodes_from(["a", "b", "c"])
    add_flag(g, "a", "b", "sup")
    add_flag(g, "a", "b", "link")
    add_flag(g, "a", "c", "sup")
    add_flag(g, "a", "c", "link")
    assert g["a"]["b"] is g["a"]["c"] is edge_flags(True, True, 0)
    assert g["a"]["b"] == {"sup": True, "link": True, "kind": "sup"}
    assert g._pred["b"]["a"] is g._succ["a"]["b"]
    with pytest.raises(TypeError):
        g["a"]["b"]["kind"] = "x"
    add_flag(g, "b", "c", "monitor")
    add_flag(g, "b", "c", "monitor")
    assert g["b"]["c"] == {"monitor": 2, "kind": "monitor"}
    remove_flag(g, "b", "c", "monitor")
    assert g["b"]["c"]["monitor"] == 1
    remove_flag(g, "b", "c", "monitor")
    assert not g.has_edge("b", "c")
    remove_flag(g, "a", "b", "sup")
    assert g["a"]["b"] == {"link": True, "kind": "link"}
    set_edge(g, "a", "b", False, False, 0)
    assert not g.has_edge("a", "b") and isinstance(g.nodes["a"], Proc)


def test_a_supervised_pair_keeps_its_link_on_the_sup_edge_alone() -> None:
    g = ProcGraph()
    g.add_nodes_from(["s", "c", "x"])
    link_pair(g, "c", "s")  # linked before the supervision is known: both ways
    assert g.has_edge("c", "s") and g.has_edge("s", "c")
    add_flag(g, "s", "c", "sup")  # the link moves onto the sup edge
    assert g["s"]["c"] == {"sup": True, "link": True, "kind": "sup"} and not g.has_edge("c", "s")
    assert linked(g, "c") == ["s"] and linked(g, "s") == ["c"]
    add_flag(g, "c", "s", "monitor")  # a monitor back: an edge of its own, the link stays where it is
    assert g["c"]["s"] == {"monitor": 1, "kind": "monitor"} and linked(g, "c") == ["s"]
    link_pair(g, "c", "s")  # linking again changes nothing
    assert g["c"]["s"] == {"monitor": 1, "kind": "monitor"}
    link_pair(g, "c", "x")
    assert sorted(linked(g, "c")) == ["s", "x"] and linked(g, "x") == ["c"]
    remove_flag(g, "s", "c", "sup")  # no longer supervised: the link is stored both ways again
    assert g["s"]["c"] == {"link": True, "kind": "link"} and g["c"]["s"]["link"] is True
    assert sorted(linked(g, "c")) == ["s", "x"] and linked(g, "s") == ["c"]
    add_flag(g, "s", "c", "sup")
    unlink_pair(g, "s", "c")
    assert g["s"]["c"] == {"sup": True, "kind": "sup"} and g["c"]["s"] == {"monitor": 1, "kind": "monitor"}
    assert linked(g, "c") == ["x"] and linked(g, "s") == []


@pytest.mark.parametrize(
    "raw",
    [
        {"pid": "<0.1.0>", "kind": "supervisor", "label": "Root", "links": ["<0.2.0>", "<0.3.0>"]},
        {"pid": "<0.2.0>", "supervisor": "<0.1.0>", "child_id": "a", "trap_exit": False, "monitors": ["<0.1.0>"]},
        {"pid": 7, "status": "running", "handler_time": 0.0, "memory": 0.0, "rate": 3.5, "restarts": 2},
        {"pid": "<0.4.0>", "region": "eu", "zone": None, "started_at": 12.5, "budget": {"used": 1}},
        {"pid": "<0.5.0>", "name": "cache", "parent": "<0.1.0>", "mailbox": 4, "trap_exit": None},
    ],
)
def test_a_prepared_snapshot_record_is_the_normalized_record(raw: dict[str, object]) -> None:
    # prepare() sets the fields in one call: the same record as normalize() key by key
    pid, got, links, mons = prepare(dict(raw))
    want = Proc()
    want.update(normalize(dict(raw)))
    assert pid == want["pid"] == str(raw["pid"]) and pid is sys.intern(pid)
    assert got.items() == want.items()
    assert [type(v) for _, v in got.items()] == [type(v) for _, v in want.items()]
    assert all(got[k] is sys.intern(got[k]) for k in FIELDS if isinstance(got[k], str))
    assert links == tuple(str(x) for x in raw.get("links") or ())  # type: ignore[attr-defined]
    assert mons == tuple(str(x) for x in raw.get("monitors") or ())  # type: ignore[attr-defined]
    assert got["rate"] == 0.0 and got["trap_exit"] == want["trap_exit"]

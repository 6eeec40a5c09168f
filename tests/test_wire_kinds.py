"""The browser's and the observer's kinds of events and changes are the
protocol's (``agent.protocol.EVENT_KINDS`` / ``CHANGE_KINDS``): a kind renamed
or added on one side fails here instead of silently never matching."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from agent import protocol as P

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "web" / "static" / "js"

_SET = re.compile(r"export const (LIFECYCLE|STRUCTURAL) = new Set\(\[(.*?)\]\)", re.S)
_COMPARE = re.compile(r"\b[ce]\.kind\s*[!=]==\s*\"(\w+)\"")
"""``c.kind === "exit"`` (a change) or ``e.kind === "exit"`` (an event of a feed)."""
_KIND_CLASS = re.compile(r"\[([^\]]*)\]\.includes\(k\)")
_STRING = re.compile(r"\"(\w+)\"")


def _js_kind_sets() -> dict[str, set[str]]:
    state = (JS / "state.js").read_text()
    found = {name: set(_STRING.findall(body)) for name, body in _SET.findall(state)}
    util = (JS / "util.js").read_text()
    found["util.js kindClass"] = {k for body in _KIND_CLASS.findall(util) for k in _STRING.findall(body)}
    for path in sorted(JS.rglob("*.js")):
        kinds = set(_COMPARE.findall(path.read_text()))
        if kinds:
            found[str(path.relative_to(JS))] = kinds
    return found


def test_the_browsers_kinds_are_the_protocols() -> None:
    found = _js_kind_sets()
    assert {"LIFECYCLE", "STRUCTURAL", "util.js kindClass", "state.js"} <= found.keys(), "the lists moved: update me"
    unknown = {where: sorted(kinds - set(P.CHANGE_KINDS)) for where, kinds in found.items()}
    assert {where: kinds for where, kinds in unknown.items() if kinds} == {}
    # a lifecycle change is one of the wire's lifecycle events
    assert found["LIFECYCLE"] <= set(P.EVENT_KINDS)


def _model_change_kinds() -> set[str]:
    kinds: set[str] = set()
    for path in (ROOT / "observer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Change"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                kinds.add(node.args[0].value)
    return kinds


def test_the_observers_change_kinds_are_the_protocols() -> None:
    kinds = _model_change_kinds()
    assert {"reset", "spawn", "exit"} <= kinds, "the observer builds its changes differently now: update me"
    assert sorted(kinds - set(P.CHANGE_KINDS)) == []


def test_every_event_kind_has_a_change_kind() -> None:
    assert set(P.EVENT_KINDS) <= set(P.CHANGE_KINDS)
    assert len(set(P.CHANGE_KINDS)) == len(P.CHANGE_KINDS)

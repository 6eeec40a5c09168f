"""Layers only import downwards: actors <- agent <- observer <- (web is not Python)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "actors": {"agent", "observer", "examples", "bench"},
    "agent": {"observer", "examples", "bench"},
    "observer": {"bench"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_no_layer_imports_upwards() -> None:
    bad = []
    for layer, forbidden in FORBIDDEN.items():
        for path in (ROOT / layer).rglob("*.py"):
            for mod in _imports(path) & forbidden:
                bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert bad == []


OPTIONAL_FOR_THE_AGENT = {"orjson"}
"""Used when installed (the ``fast`` extra); the agent works without them."""


def _guarded_imports(path: Path) -> set[str]:
    """Top-level modules imported inside ``try: ... except ImportError``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        catches = {
            n.id for h in node.handlers for n in ast.walk(h.type) if h.type is not None and isinstance(n, ast.Name)
        }
        if not catches & {"ImportError", "ModuleNotFoundError"}:
            continue
        for stmt in node.body:
            if isinstance(stmt, ast.Import):
                found |= {a.name.split(".")[0] for a in stmt.names}
    return found


def test_agent_uses_only_the_standard_library_and_actors() -> None:
    import sys

    allowed = set(sys.stdlib_module_names) | {"actors", "agent", "__future__"}
    bad = []
    for path in (ROOT / "agent").rglob("*.py"):
        optional = _guarded_imports(path) & OPTIONAL_FOR_THE_AGENT
        for mod in _imports(path) - allowed - optional:
            bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert bad == []


def test_the_observer_does_not_reach_into_the_runtime() -> None:
    bad = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "observer").rglob("*.py")
        if "actors" in _imports(p) and p.relative_to(ROOT / "observer").parts[0] != "demo"  # the demo system
    ]
    assert bad == []

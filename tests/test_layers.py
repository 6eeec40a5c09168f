"""The layers: actors <- agent <- observer (<- web, which is not Python).

The package-level rules (layers, independence, no cross-package private
imports) are import-linter contracts in ``pyproject.toml`` (``make lint``);
:func:`test_import_contracts_hold` runs them so that pytest enforces them too.
The rest are what import-linter cannot say: every module imports alone, no
import of our own modules hides inside a function (or at the bottom of a
module) to dodge a cycle, and the agent needs nothing outside the standard
library.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("actors", "agent", "observer", "bench", "examples")
"""Our own top-level packages (what import-linter's ``root_packages`` lists)."""


def _modules() -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append(".".join(parts))
    return out


# -- import-linter ----------------------------------------------------------------------------------


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), "import-linter is a dev dependency: pip install -e '.[dev]'"
    res = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# -- every module imports alone ---------------------------------------------------------------------

_IMPORT_EACH = textwrap.dedent(
    """
    import importlib, json, sys, traceback
    own = tuple(sys.argv[1].split(","))
    failed = {}
    for mod in sys.argv[2:]:
        for name in [m for m in sys.modules if m.split(".")[0] in own]:
            del sys.modules[name]  # our modules start cold for each one; third-party ones stay
        try:
            importlib.import_module(mod)
        except BaseException:
            failed[mod] = traceback.format_exc(limit=-3)
    print(json.dumps(failed))
    """
)


def test_every_module_imports_alone() -> None:
    """Each module imported first, in a fresh interpreter (our modules purged
    between two), imports: no module depends on another having been imported
    before it, and no cycle breaks depending on where one enters."""
    mods = [m for m in _modules() if not m.endswith("__main__")]
    res = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, ",".join(PACKAGES), *mods],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert res.returncode == 0, res.stderr[-4000:]
    failed = json.loads(res.stdout.strip().splitlines()[-1])
    assert failed == {}, "\n".join(f"{m}:\n{tb}" for m, tb in failed.items())


# -- no function-level imports of our own modules ---------------------------------------------------

KNOWN_LATE_IMPORTS: set[str] = set()
# Known when the rule came in (issue #12): imports dodging a cycle (or a
# start-up cost) by importing late; the last went in the same issue. Keep it empty.


def _is_own(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] in PACKAGES
    return any(a.name.split(".")[0] in PACKAGES for a in node.names)


def late_imports(path: Path, root: Path = ROOT) -> list[str]:
    """Imports of our own modules inside a function, or at module level after
    the first ``def``/``class`` (at the bottom of a module), as
    ``"path: statement"``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(root).as_posix()
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import | ast.ImportFrom) and _is_own(child):
                found.append(f"{rel}: {ast.unparse(child)}")
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    visit(tree, False)
    seen_def = False
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            seen_def = True
        elif seen_def and isinstance(stmt, ast.Import | ast.ImportFrom) and _is_own(stmt):
            found.append(f"{rel}: {ast.unparse(stmt)}")
    return found


def test_no_function_level_imports_of_our_own_modules() -> None:
    found = [hit for pkg in PACKAGES for path in sorted((ROOT / pkg).rglob("*.py")) for hit in late_imports(path)]
    new = [hit for hit in found if hit not in KNOWN_LATE_IMPORTS]
    assert new == [], "imports inside functions or at the bottom of a module (move the shared piece):\n" + "\n".join(
        new
    )


def test_the_allow_list_of_late_imports_only_shrinks() -> None:
    """An entry whose import is gone must leave the list (so it cannot come back unnoticed)."""
    found = {hit for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py") for hit in late_imports(path)}
    assert sorted(KNOWN_LATE_IMPORTS - found) == []


def test_the_scan_finds_an_import_inside_a_function(tmp_path: Path) -> None:
    probe = tmp_path / "agent" / "_probe.py"
    probe.parent.mkdir()
    probe.write_text(
        "import json\n\n\ndef f():\n    import csv\n    from . import protocol\n    return protocol\n\n\n"
        "from actors import Node\n"
    )
    assert late_imports(probe, tmp_path) == [
        "agent/_probe.py: from . import protocol",
        "agent/_probe.py: from actors import Node",
    ]


# -- the agent reads the runtime through its public API only --------------------------------------------

_RUNTIME_OBJECTS = {"p", "proc", "process", "b", "behaviour", "sup", "ev", "event", "report", "task"}
"""Names the agent gives runtime objects (``p = actors.find_process(...)``, ``ev``: an event)."""


def test_the_agent_reads_no_private_field_of_the_runtime() -> None:
    """``p._mb``, ``node._get(...)``: the public introspection API
    (``actors.find_process``, ``process_status``, ...) has what the agent
    needs. A heuristic on names (a runtime object is called ``p``, ``proc``,
    ``...node``, ...): import-linter sees modules, not attributes."""
    bad = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = ast.unparse(node.value).split(".")[-1]
                if base in _RUNTIME_OBJECTS or base.endswith("node"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert bad == []


# -- the agent needs only the standard library ------------------------------------------------------

OPTIONAL_FOR_THE_AGENT = {"orjson"}
"""Used when installed (the ``fast`` extra); the agent works without them."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


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
    allowed = set(sys.stdlib_module_names) | {"actors", "agent", "__future__"}
    bad = []
    for path in (ROOT / "agent").rglob("*.py"):
        optional = _guarded_imports(path) & OPTIONAL_FOR_THE_AGENT
        for mod in _imports(path) - allowed - optional:
            bad.append(f"{path.relative_to(ROOT)} imports {mod}")
    assert bad == []

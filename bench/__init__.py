"""Benchmarks: ``python -m bench <name>`` (see ``docs/benchmarks.md``).

A benchmark is a public module of this package (``bench/<name>.py``) with
``main(argv: list[str]) -> int``; it prints progress lines and, as its last
line, one JSON object with its figures. Helpers live in ``bench._util``.
"""

from __future__ import annotations

import pkgutil


def available() -> list[str]:
    """Names of the benchmarks: the package's modules not starting with ``_``."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_") and not m.ispkg)

"""Small helpers the query modules share to build WHERE clauses."""

from __future__ import annotations

from typing import Any

__all__ = ["like", "window"]


def like(s: str) -> str:
    """``s`` as a LIKE pattern matching itself (used with ``ESCAPE '\\'``)."""
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def window(
    node: str | None, since: float | None, until: float | None, *, prefix: str = ""
) -> tuple[list[str], list[Any]]:
    """Conditions (and their parameters) for one node and a time window; None leaves one out."""
    where: list[str] = []
    params: list[Any] = []
    if node is not None:
        where.append(f"{prefix}node = ?")
        params.append(node)
    if since is not None:
        where.append(f"{prefix}time >= ?")
        params.append(since)
    if until is not None:
        where.append(f"{prefix}time <= ?")
        params.append(until)
    return where, params

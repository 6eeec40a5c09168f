"""Chaos experiment journals in the history database (table ``chaos_experiments``).

Threading rules: any thread. :func:`save` blocks until the row is committed
(by the database's writer thread) and raises :class:`~observer.db.StoreError`
if it cannot be.
"""

from __future__ import annotations

import json
from typing import Any

from .database import Database

__all__ = ["get", "list_experiments", "save"]

_SAVE_SQL = (
    "INSERT INTO chaos_experiments (id, node, title, started, ended, status, held, kills, json) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET node = excluded.node, "
    "title = excluded.title, started = excluded.started, ended = excluded.ended, status = excluded.status, "
    "held = excluded.held, kills = excluded.kills, json = excluded.json"
)


def save(db: Database, journal: dict[str, Any]) -> None:
    """Insert or replace one journal (``Journal.to_dict()``)."""
    row = (
        journal["id"],
        journal["node"],
        journal.get("title"),
        journal["started"],
        journal.get("ended"),
        journal["status"],
        None if journal.get("hypothesis_held") is None else int(bool(journal["hypothesis_held"])),
        int(journal.get("summary", {}).get("carried_out") or 0),
        json.dumps(journal, default=str),
    )
    db.execute_write(_SAVE_SQL, row)


def list_experiments(db: Database, *, node: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Past experiments, newest first, without their kills and checks."""
    sql = "SELECT id, node, title, started, ended, status, held, kills FROM chaos_experiments"
    params: list[Any] = []
    if node is not None:
        sql += " WHERE node = ?"
        params.append(node)
    sql += " ORDER BY started DESC LIMIT ?"
    params.append(int(limit))
    return [r | {"held": None if r["held"] is None else bool(r["held"])} for r in db.execute(sql, params)]


def get(db: Database, exp_id: str) -> dict[str, Any] | None:
    """One journal, or None."""
    rows = db.execute("SELECT json FROM chaos_experiments WHERE id = ?", (exp_id,))
    return json.loads(rows[0]["json"]) if rows else None

"""Server-side login sessions in the history database (table ``login_sessions``).

One row per login: its random id (also in the signed cookie), a fingerprint
of the login token it was made with (never the token), who and what role,
when it was created, last seen and expires (absolute), and when and by whom
it was revoked.

Threading rules: any thread. Writes go to the database's writer thread;
:func:`create` and the revocations wait for the commit, :func:`touch` does not.
"""

from __future__ import annotations

from typing import Any

from .database import Database

__all__ = ["COLUMNS", "active", "create", "get", "load_live", "revoke", "revoke_token", "revoked_among", "touch"]

COLUMNS = (
    "id",
    "token",
    "who",
    "role",
    "created",
    "last_seen",
    "expires",
    "revoked",
    "revoked_by",
    "from_addr",
    "agent",
)

_INSERT_SQL = (
    "INSERT INTO login_sessions (id, token, who, role, created, last_seen, expires, from_addr, agent) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOUCH_SQL = "UPDATE login_sessions SET last_seen = ? WHERE id = ? AND last_seen < ?"
_REVOKE_SQL = "UPDATE login_sessions SET revoked = ?, revoked_by = ? WHERE id = ? AND revoked IS NULL"
_REVOKE_TOKEN_SQL = "UPDATE login_sessions SET revoked = ?, revoked_by = ? WHERE token = ? AND revoked IS NULL"


def create(db: Database, row: dict[str, Any]) -> None:
    """Insert a new session (waits for the commit)."""
    db.execute_write(
        _INSERT_SQL,
        (
            row["id"],
            row["token"],
            row["who"],
            row["role"],
            row["created"],
            row["last_seen"],
            row["expires"],
            row.get("from_addr"),
            row.get("agent"),
        ),
    )


def touch(db: Database, sid: str, when: float) -> None:
    """Record activity (write-behind, never blocks)."""
    db.write_nowait(_TOUCH_SQL, (when, sid, when))


def revoke(db: Database, sid: str, when: float, by: str) -> None:
    db.execute_write(_REVOKE_SQL, (when, by, sid))


def revoke_token(db: Database, token: str, when: float, by: str) -> None:
    db.execute_write(_REVOKE_TOKEN_SQL, (when, by, token))


def load_live(db: Database, now: float) -> list[dict[str, Any]]:
    """Sessions neither revoked nor past their absolute expiry (idle expiry is the caller's)."""
    cols = ", ".join(COLUMNS)
    return db.execute(
        f"SELECT {cols} FROM login_sessions WHERE revoked IS NULL AND expires > ? ORDER BY created", (now,)
    )


def active(db: Database, since: float, limit: int = 500) -> list[dict[str, Any]]:
    """Sessions created or seen since ``since`` (revoked ones included), newest first."""
    cols = ", ".join(COLUMNS)
    return db.execute(
        f"SELECT {cols} FROM login_sessions WHERE last_seen >= ? OR created >= ? ORDER BY created DESC LIMIT ?",
        (since, since, limit),
    )


def get(db: Database, sid: str) -> dict[str, Any] | None:
    """One session by id (revoked or not), or None."""
    cols = ", ".join(COLUMNS)
    rows = db.execute(f"SELECT {cols} FROM login_sessions WHERE id = ?", (sid,))
    return rows[0] if rows else None


def revoked_among(db: Database, sids: list[str], *, batch: int = 500) -> set[str]:
    """Which of ``sids`` are revoked (by any server sharing the database)."""
    out: set[str] = set()
    for i in range(0, len(sids), batch):
        part = sids[i : i + batch]
        marks = ", ".join("?" * len(part))
        rows = db.execute(f"SELECT id FROM login_sessions WHERE revoked IS NOT NULL AND id IN ({marks})", part)
        out.update(str(r["id"]) for r in rows)
    return out

"""The observer's one database layer.

* :class:`Database` -- owns the connections: one writer thread that every
  write is handed to, a few read connections for queries, and the schema as
  numbered migrations applied on open (a file written by a newer observer is
  refused with :class:`SchemaTooNewError`). Nothing else opens the database.
* :class:`Backend` -- the seam to one engine (connect, dialect, errors,
  migrations): :class:`SQLiteBackend` (the embedded default, one file) and
  :class:`PostgresBackend` (one database shared by several observer servers);
  :func:`open_backend` picks one from a ``--db`` value (a path or a
  ``postgresql://`` URL).
* The queries and statements, by area: :mod:`observer.db.history` (events,
  checkpoints, audit, timeline), :mod:`observer.db.crashes` (crashes stored
  once, grouped by signature), :mod:`observer.db.chaos` (experiment journals),
  :mod:`observer.db.traces` (message traces).

The history writer that folds agents' messages into rows and checkpoints is
:class:`observer.store.HistoryStore`, built on a :class:`Database`.
"""

from __future__ import annotations

from . import chaos, crashes, history, traces
from .backend import Backend, Connection, Migration
from .database import Database
from .errors import AuditError, SchemaTooNewError, StoreError
from .postgresql import PostgresBackend, is_postgres_url
from .sqlite import MIGRATIONS, SQLiteBackend

SCHEMA_VERSION = MIGRATIONS[-1].number
"""The schema version this observer writes (the same on every backend)."""


def open_backend(where: str, *, max_bytes: int | None = None) -> Backend:
    """The backend for a ``--db`` value: a ``postgresql://`` URL, else an SQLite file
    (``max_bytes`` caps the file; a PostgreSQL server has its own limits). Raises
    :class:`StoreError` for a URL when psycopg is missing or the URL is malformed."""
    if is_postgres_url(where):
        return PostgresBackend(where)
    return SQLiteBackend(where, max_bytes=max_bytes)


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "AuditError",
    "Backend",
    "Connection",
    "Database",
    "Migration",
    "PostgresBackend",
    "SQLiteBackend",
    "SchemaTooNewError",
    "StoreError",
    "chaos",
    "crashes",
    "history",
    "is_postgres_url",
    "open_backend",
    "traces",
]

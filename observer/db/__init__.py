"""The observer's one database layer.

* :class:`Database` -- owns the connections: one writer thread that every
  write is handed to, a few read connections for queries, and the schema as
  numbered migrations applied on open (a file written by a newer observer is
  refused with :class:`SchemaTooNewError`). Nothing else opens the database.
* :class:`Backend` -- the seam to one engine (connect, dialect, errors,
  migrations); :class:`SQLiteBackend` (the embedded default) and
  :class:`PostgresBackend` (a history several observer servers share).
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
"""The SQLite schema version this observer writes."""

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
    "traces",
]

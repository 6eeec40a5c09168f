"""The seam between the database layer and one database engine.

:class:`observer.db.Database` (the writer thread, the read connections, the
migration runner) and the query modules (:mod:`observer.db.history`,
:mod:`observer.db.crashes`, :mod:`observer.db.chaos`) speak to the engine only
through a :class:`Backend`: how to connect, how to spell what differs between
SQL dialects, which errors mean "cannot write now", and the engine's own
numbered :class:`Migration` list, and how observers sharing one database agree
on who records what (:meth:`Backend.claim`). SQLite (:mod:`observer.db.sqlite`)
is the embedded default; PostgreSQL (:mod:`observer.db.postgresql`) is shared by
several observer servers. Neither is known to the callers.

SQL in the query modules is written once, in the portable subset (no
``INSERT OR REPLACE``, no ``MIN(a, b)`` scalars, no boolean sums), with ``?``
placeholders that :meth:`Backend.sql` turns into the engine's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Backend", "Connection", "Cursor", "Migration"]


class Cursor(Protocol):
    """What the layer uses of a DB-API cursor."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the layer uses of a connection (sqlite3's; psycopg's has the same
    ``execute``). The writer's connection is in autocommit mode: the layer
    opens its transactions itself with ``BEGIN`` / ``COMMIT``."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered step of a backend's schema."""

    number: int
    """The schema version once applied (1, 2, 3...: no gaps)."""
    name: str
    """What it does, for the log."""
    apply: Callable[[Connection], None]
    """Runs inside the migration transaction, on the writer's connection."""


class Backend(Protocol):
    """One database engine. Methods are called from the layer's threads: ``connect``
    from the writer thread (``write=True``) or any reader (``write=False``)."""

    name: str
    """``sqlite`` or ``postgresql``."""
    errors: tuple[type[BaseException], ...]
    """The engine's own errors. On the writer they mean the database cannot be
    written now (disk full, read-only, locked): the layer keeps rows in memory
    and retries instead of failing; on a reader they become :class:`StoreError`."""

    migration_begin: str
    """The statement opening the migration transaction, taking the write lock
    at once (two observers opening one file: the second waits, then finds the
    migrations done)."""

    def describe(self) -> str:
        """Where the data is (a path, or a DSN without its password), for messages."""
        ...

    def connect(self, *, write: bool) -> Connection:
        """A new connection. ``write=True``: the writer's (autocommit, the layer
        runs ``BEGIN``/``COMMIT``), creating the database if needed; ``write=False``:
        a read-only one whose rows can be turned into dicts by :meth:`row_dict`,
        usable from one thread at a time (any thread)."""
        ...

    def row_dict(self, row: Any) -> dict[str, Any]:
        """One fetched row as a dict of column name to value."""
        ...

    def sql(self, text: str) -> str:
        """``text`` (portable SQL with ``?`` placeholders) in this engine's dialect."""
        ...

    def floor_int(self, expr: str) -> str:
        """SQL for the integer part (floor) of a non-negative ``expr``."""
        ...

    def is_missing_table(self, exc: BaseException) -> bool:
        """True if ``exc`` says a table does not exist (a database nobody wrote yet)."""
        ...

    def migrations(self) -> Sequence[Migration]:
        """This engine's schema, as numbered steps from an empty database."""
        ...

    def claim(self, conn: Connection, key: str) -> bool:
        """Try to take ``key`` for this observer, on the writer's connection ``conn``
        (outside a transaction); held until :meth:`release` or the connection
        closes, so a claim of an observer that dies passes to another. True if
        held. An engine that one observer alone writes (SQLite) always says True."""
        ...

    def release(self, conn: Connection, key: str) -> None:
        """Give ``key`` up (it was claimed on ``conn``)."""
        ...

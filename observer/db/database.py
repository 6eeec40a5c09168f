"""One database, one owner: the writer thread, the read connections, the migrations.

In the manner of Datasette's ``datasette/database.py``: every write is handed
to one writer thread that owns the only writing connection; queries run on
read connections taken from a small pool; the schema is the backend's list of
numbered migrations, applied when the database is opened. Nothing else in the
observer opens the database.

Threading rules
    Every public method may be called from any thread.
    :meth:`Database.call_soon` and :meth:`Database.write_nowait` only append
    to a queue (O(1), never block); the writer runs queued calls in order.
    Calls run on the writer thread may :meth:`Database.buffer` rows: the writer
    commits buffered rows in one transaction every ``batch_interval`` seconds
    or ``batch_rows`` rows (write-behind), so a thousand events a second cost a
    few small transactions. :meth:`Database.execute_write_fn` blocks its
    caller until its function has run, in its own transaction, on the writer
    thread. Reads (:meth:`Database.execute`, :meth:`Database.iterate`,
    :meth:`Database.execute_fn`) use a read connection (SQLite in WAL mode:
    readers never block the writer) and see what has been committed: call
    :meth:`Database.flush` first to include everything queued so far.

Priority
    Blocking writes (:meth:`Database.execute_write_fn`: a login's session row,
    an audit row, a revocation) are small and a person waits for them; the
    queue may hold seconds of bulk work (a thousand nodes' events, the
    checkpoints of a million processes just attached). They take a lane of
    their own: the writer runs them before its next queued item, and long
    work on the writer thread calls :meth:`Database.run_urgent` between its
    slices, so a login waits for at most one slice, not for the queue. Still
    one writer, one connection, one transaction at a time: a blocking write
    commits on its own, never inside the write-behind batch, and nothing is
    reordered within a lane (a blocking write is committed before its caller
    goes on, so nothing it queues afterwards can overtake it).

Failure
    If the database cannot be written (disk full, read-only file, size cap
    reached), the error is logged once, buffered rows are kept in memory (up
    to ``max_pending``; older ones are then dropped and counted), and the
    writer retries every ``retry_interval`` seconds; callers keep running.
    The queue to the writer is bounded too: past ``max_queued`` waiting items,
    :meth:`Database.call_soon` and :meth:`Database.write_nowait` drop what
    they are given (counted with the dropped rows, logged once). A
    blocking write (:meth:`Database.execute_write_fn`) raises
    :class:`StoreError` instead, so that its caller can refuse what it was
    about to do. A function raising on the writer thread is logged and does
    not stop the writer.

Claims
    Several observers sharing one database (PostgreSQL) and attached to the
    same node would each write its history. :meth:`Database.claim` (writer
    thread) says whether this observer holds a key, such as a node's history:
    the backend's lock, held by the writer's connection, so the claim of an
    observer that stops or loses its connection passes to another. An unheld
    claim is asked for again at most every ``claim_interval`` seconds.

Migrations
    When the writer opens the database it reads the schema version (table
    ``schema_version``) and applies, in one transaction, every migration of
    the backend numbered above it. A version above the last migration we know
    means a newer observer wrote the file: :class:`SchemaTooNewError` is raised
    from the constructor and nothing is written.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from .backend import Backend, Connection
from .errors import SchemaTooNewError, StoreError

__all__ = ["Database"]

log = logging.getLogger("observer.db")

T = TypeVar("T")

_CALL, _ROW, _FLUSH, _CLOSE, _WAKE = range(5)
_DRAIN = 5000
"""Queue items handled between two looks at the clock (and two commits)."""


class Database:
    """The owner of one database (see the module docstring for the threading rules).

    Raises :class:`SchemaTooNewError` if the database was written by a newer
    observer; any other failure to open is logged and retried (reads raise
    :class:`StoreError` meanwhile)."""

    def __init__(
        self,
        backend: Backend,
        *,
        batch_interval: float = 0.1,
        batch_rows: int = 500,
        batch_bytes: int = 8 << 20,
        max_pending: int = 100_000,
        retry_interval: float = 5.0,
        readers: int = 4,
        max_queued: int = 1_000_000,
        open_timeout: float = 30.0,
        claim_interval: float = 2.0,
    ) -> None:
        self.backend = backend
        self.batch_interval = batch_interval
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self._backlog_bytes = 0
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self.readers = readers
        self.max_queued = max_queued
        self.claim_interval = claim_interval
        self._claims: dict[str, tuple[bool, float]] = {}
        self._claims_asked: set[str] = set()
        self._errors: tuple[type[BaseException], ...] = (*backend.errors, OSError)
        self._q: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._urgent: queue.SimpleQueue[tuple[Callable[[Connection], Any], Future[Any]]] = queue.SimpleQueue()
        self._backlog: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._ticks: list[Callable[[float], None]] = []
        self._commit_hooks: list[Callable[[list[tuple[str, tuple[Any, ...]]]], None]] = []
        self._sql: dict[str, str] = {}
        self._conn: Connection | None = None
        self._pool: list[Connection] = []
        self._pool_lock = threading.Lock()
        self._error: str | None = None
        self._fatal: StoreError | None = None
        self._next_retry = 0.0
        self._dropped = 0
        self._written = 0
        self._closed = False
        self._overflowing = False
        self._in_write = False
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer-db-writer", daemon=True)
        self._thread.start()
        self._opened.wait(open_timeout)
        if self._fatal is not None:
            self.close()
            raise self._fatal

    # -- writing (any thread) -------------------------------------------------------------------

    def call_soon(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the writer thread, after what was queued before. Never
        blocks: past ``max_queued`` waiting items the call is dropped (and counted).
        ``fn`` may :meth:`buffer` rows; what it raises is logged."""
        if self._closed:
            return
        if self._q.qsize() >= self.max_queued:
            self._overflow()
            return
        self._q.put((_CALL, fn, args))

    def write_nowait(self, sql: str, row: tuple[Any, ...]) -> None:
        """Queue one write-behind statement (committed with the next batch). Never
        blocks; dropped (and counted) past ``max_queued`` waiting items."""
        if self._closed:
            return
        if self._q.qsize() >= self.max_queued:
            self._overflow()
            return
        self._q.put((_ROW, sql, row))

    def _overflow(self) -> None:
        self._dropped += 1
        if not self._overflowing:
            self._overflowing = True
            log.error(
                "database %s: the writer is %d items behind; dropping new ones until it catches up",
                self.backend.describe(),
                self.max_queued,
            )

    def execute_write_fn(self, fn: Callable[[Connection], T], *, timeout: float = 5.0) -> T:
        """Run ``fn(conn)`` on the writer thread in its own transaction, committed
        before this returns its result. Raises :class:`StoreError` if the database
        cannot be written (or is closed, or ``timeout`` passes); what ``fn`` raises
        otherwise is raised here, the transaction rolled back."""
        fut: Future[T] = Future()
        if threading.current_thread() is self._thread:
            self._write_fn(fn, fut)
        elif self._closed:
            raise StoreError(f"the database {self.backend.describe()} is closed")
        else:  # the fast lane: ahead of the queued bulk work (see "Priority" in the module docstring)
            self._urgent.put((fn, fut))
            self._q.put((_WAKE,))  # an idle writer waits on the queue: wake it
        try:
            return fut.result(timeout)
        except TimeoutError as exc:
            raise StoreError(f"no answer from the database writer within {timeout}s") from exc

    def execute_write(self, sql: str, params: Iterable[Any] = (), *, timeout: float = 5.0) -> None:
        """One statement, committed before this returns (see :meth:`execute_write_fn`)."""
        ps = tuple(params)
        self.execute_write_fn(lambda conn: conn.execute(self.dialect(sql), ps) and None, timeout=timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (or failed). True if it was written."""
        if self._closed:
            return False
        done = threading.Event()
        self._q.put((_FLUSH, done))
        return done.wait(timeout) and not self._backlog

    def run_urgent(self) -> None:
        """(Writer thread only.) Run the blocking writes waiting now (:meth:`execute_write_fn`),
        each in its own transaction. The writer calls it between queued items; a long piece of
        work run on the writer thread (a checkpoint of a big node) calls it now and then, so
        that a login does not wait for the end of it. Does nothing inside a write function."""
        if self._in_write or threading.current_thread() is not self._thread:
            return
        while True:
            try:
                fn, fut = self._urgent.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                self._write_fn(fn, fut)

    def on_tick(self, fn: Callable[[float], None]) -> None:
        """Call ``fn(time.monotonic())`` on the writer thread after each round of
        queued work, and at least every ``batch_interval`` seconds."""
        self._ticks.append(fn)

    def on_commit(self, fn: Callable[[list[tuple[str, tuple[Any, ...]]]], None]) -> None:
        """Call ``fn(rows)`` on the writer thread after each commit of buffered rows,
        with those ``(sql, row)`` pairs (for live pushes: it must not block; what it
        raises is logged)."""
        self._commit_hooks.append(fn)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is buffered, stop the writer, close every connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._q.put((_CLOSE,))
        self._thread.join(timeout)
        with self._pool_lock:
            pool, self._pool = self._pool, []
        for conn in pool:
            with contextlib.suppress(Exception):
                conn.close()

    def stats(self) -> dict[str, Any]:
        """``{"healthy", "error", "pending", "dropped", "written", "path"}``."""
        return {
            "healthy": self._error is None,
            "error": self._error,
            "pending": len(self._backlog) + self._q.qsize(),
            "dropped": self._dropped,
            "written": self._written,
            "path": self.backend.describe(),
        }

    @property
    def closed(self) -> bool:
        return self._closed

    def dialect(self, sql: str) -> str:
        """``sql`` in the backend's dialect (cached)."""
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = self.backend.sql(sql)
        return out

    # -- the writer thread ----------------------------------------------------------------------

    def claim(self, key: str) -> bool:
        """(Writer thread only.) True if this observer holds ``key`` (see "Claims"
        in the module docstring). Cheap: a held claim is not asked again until the
        connection changes. While the database cannot be reached, the last answer
        stands (True if there was none: rows are kept, not lost)."""
        held, next_try = self._claims.get(key, (True, 0.0))
        conn = self._conn
        now = time.monotonic()
        if conn is None or (key in self._claims_asked and (held or now < next_try)):
            return held
        try:
            held = self.backend.claim(conn, key)
        except self._errors as exc:
            self._fail(exc)
            return held
        self._claims[key] = (held, now + self.claim_interval)
        self._claims_asked.add(key)
        return held

    def release(self, key: str) -> None:
        """(Writer thread only.) Give up ``key`` if held; the next :meth:`claim` asks again."""
        held, _ = self._claims.pop(key, (False, 0.0))
        asked = key in self._claims_asked
        self._claims_asked.discard(key)
        if held and asked and self._conn is not None:
            try:
                self.backend.release(self._conn, key)
            except self._errors as exc:
                self._fail(exc)

    def buffer(self, sql: str, row: tuple[Any, ...], *, size: int = 0) -> None:
        """(Writer thread only.) Add one write-behind row; the oldest are dropped past ``max_pending``.
        ``size``: the bytes of a big row (a checkpoint); past ``batch_bytes`` of them the
        batch is committed after the queued item that buffered them, not at the end of the
        round: a round of twenty 7 MB checkpoints is not one transaction of 140 MB that a
        login would wait for, nor 140 MB held in memory."""
        self._backlog.append((sql, row))
        self._backlog_bytes += size
        while len(self._backlog) > self.max_pending:
            self._backlog.popleft()
            self._dropped += 1

    def _run(self) -> None:
        try:
            self._open()
        except SchemaTooNewError as exc:
            self._fatal = exc
            self._opened.set()
            return
        except Exception as exc:
            self._fail(exc)
        self._opened.set()
        last_commit = time.monotonic()
        stop = False
        while not stop:
            try:
                item: tuple[Any, ...] | None = self._q.get(timeout=self.batch_interval)
            except queue.Empty:
                item = None
            batch = [item] if item is not None else []
            while len(batch) < _DRAIN:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            if self._overflowing and self._q.qsize() < self.max_queued // 2:
                self._overflowing = False
                log.warning("database %s: the writer caught up", self.backend.describe())
            waiters: list[threading.Event] = []
            for it in batch:
                kind = it[0]
                try:
                    self.run_urgent()
                    if kind == _CALL:
                        it[1](*it[2])
                    elif kind == _ROW:
                        self.buffer(it[1], it[2])
                    elif kind == _FLUSH:
                        waiters.append(it[1])
                    elif kind == _CLOSE:
                        stop = True
                    if self._backlog_bytes >= self.batch_bytes and self._error is None:
                        self._write_backlog()
                except Exception:  # never let one odd item kill the writer
                    log.exception("database writer: could not run %.200r", it)
            try:
                self.run_urgent()
            except Exception:
                log.exception("database writer: a blocking write failed")
            now = time.monotonic()
            for tick in self._ticks:
                try:
                    tick(now)
                except Exception:
                    log.exception("database writer: tick %r failed", tick)
            if self._backlog and (
                stop or waiters or len(self._backlog) >= self.batch_rows or now - last_commit >= self.batch_interval
            ):
                if self._error is None or now >= self._next_retry or stop or waiters:
                    self._write_backlog()
                last_commit = now
            elif self._error is not None and now >= self._next_retry and not stop:
                # nothing to write, but the database failed (to open, say: a lock held past the busy
                # timeout by another observer migrating the same file): an empty transaction reopens it,
                # so the store's health comes back by itself instead of at the next row
                self._write_backlog()
            for w in waiters:
                w.set()
        self.run_urgent()  # asked for before the close: done, not dropped
        self._close_writer()
        while True:  # asked for after it (a race with close()): refused, not left waiting
            try:
                _, fut = self._urgent.get_nowait()
            except queue.Empty:
                break
            if fut.set_running_or_notify_cancel():
                fut.set_exception(StoreError(f"the database {self.backend.describe()} is closed"))

    def _open(self) -> None:
        conn = self.backend.connect(write=True)
        try:
            self._migrate(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn

    def _migrate(self, conn: Connection) -> None:
        steps = list(self.backend.migrations())
        latest = steps[-1].number if steps else 0
        conn.execute(self.backend.migration_begin)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = int(row[0]) if row is not None and row[0] is not None else 0
            if current > latest:
                raise SchemaTooNewError(
                    f"{self.backend.describe()} was written by a newer observer (schema {current} > {latest}, "
                    "the last this observer knows): upgrade the observer, or give it another history file"
                )
            for m in steps:
                if m.number > current:
                    log.info("database %s: migration %d (%s)", self.backend.describe(), m.number, m.name)
                    m.apply(conn)
            if latest > current:
                conn.execute("DELETE FROM schema_version")
                conn.execute(self.dialect("INSERT INTO schema_version (version) VALUES (?)"), (latest,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            raise

    def _close_writer(self) -> None:
        self._claims_asked.clear()  # a new connection holds nothing yet: ask again
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _fail(self, exc: BaseException) -> None:
        first = self._error is None
        self._error = f"{type(exc).__name__}: {exc}"
        self._next_retry = time.monotonic() + self.retry_interval
        if first:
            log.error(
                "database %s cannot be written (%s); keeping up to %d rows in memory "
                "and retrying every %gs -- the observer keeps running",
                self.backend.describe(),
                self._error,
                self.max_pending,
                self.retry_interval,
            )
        self._close_writer()

    def _ensure_conn(self) -> Connection | None:
        if self._conn is None:
            try:
                self._open()
            except Exception as exc:
                self._fail(exc)
        return self._conn

    def _recovered(self) -> None:
        if self._error is not None:
            log.warning(
                "database %s is writable again (%s); %d rows were dropped meanwhile",
                self.backend.describe(),
                self._error,
                self._dropped,
            )
            self._error = None

    def _begin(self) -> Connection | None:
        """The writer's connection in a new transaction, or None if the database
        cannot be reached. A connection that cannot begin one (the server ended
        the session: a restart, a fail-over, an idle timeout) is replaced once;
        the second failure is raised."""
        conn = self._ensure_conn()
        if conn is None:
            return None
        try:
            conn.execute("BEGIN")
            return conn
        except self._errors as exc:
            self._fail(exc)
        conn = self._ensure_conn()
        if conn is not None:
            conn.execute("BEGIN")
        return conn

    def _write_backlog(self) -> None:
        rows = list(self._backlog)
        try:
            conn = self._begin()
            if conn is None:
                return
            i = 0
            while i < len(rows):
                sql = rows[i][0]
                j = i
                while j < len(rows) and rows[j][0] == sql:
                    j += 1
                conn.executemany(self.dialect(sql), [r[1] for r in rows[i:j]])
                i = j
            conn.execute("COMMIT")
        except self._errors as exc:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.execute("ROLLBACK")
            self._fail(exc)
            return
        for _ in range(len(rows)):
            self._backlog.popleft()
        self._backlog_bytes = 0
        self._written += len(rows)
        self._recovered()
        for hook in self._commit_hooks:
            try:
                hook(rows)
            except Exception:
                log.exception("database writer: commit hook %r failed", hook)

    def _write_fn(self, fn: Callable[[Connection], T], fut: Future[T]) -> None:
        if self._in_write and self._conn is not None:  # called from a write function: its transaction
            fut.set_result(fn(self._conn))
            return
        try:
            conn = self._begin()
        except self._errors as exc:
            self._fail(exc)
            fut.set_exception(StoreError(str(exc)))
            return
        if conn is None:
            fut.set_exception(StoreError(self._error or f"the database {self.backend.describe()} is unavailable"))
            return
        self._in_write = True
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except self._errors as exc:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            self._fail(exc)
            fut.set_exception(StoreError(str(exc)))
            return
        except BaseException as exc:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
            fut.set_exception(exc)
            return
        finally:
            self._in_write = False
        self._recovered()
        fut.set_result(result)

    # -- reading (any thread) -------------------------------------------------------------------

    @contextlib.contextmanager
    def _reader(self) -> Iterator[Connection]:
        with self._pool_lock:
            conn = self._pool.pop() if self._pool else None
        if conn is None:
            try:
                conn = self.backend.connect(write=False)
            except self._errors as exc:
                raise StoreError(f"cannot read {self.backend.describe()}: {exc}") from exc
        pooled = False
        try:
            yield conn
            with self._pool_lock:
                if not self._closed and len(self._pool) < self.readers:
                    self._pool.append(conn)
                    pooled = True
        finally:
            if not pooled:
                with contextlib.suppress(Exception):
                    conn.close()

    def execute(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Run one query on a read connection; its rows as dicts ([] if its table
        does not exist yet). Raises :class:`StoreError` if the database cannot be read."""
        try:
            with self._reader() as conn:
                cur = conn.execute(self.dialect(sql), tuple(params))
                return [self.backend.row_dict(r) for r in cur.fetchall()]
        except self._errors as exc:
            if self.backend.is_missing_table(exc):
                return []
            raise StoreError(f"cannot read {self.backend.describe()}: {exc}") from exc

    def iterate(self, sql: str, params: Iterable[Any] = ()) -> Iterator[dict[str, Any]]:
        """Like :meth:`execute`, but yields rows as they are read (one read
        connection held until the iterator is exhausted or closed)."""
        try:
            with self._reader() as conn:
                cur = conn.execute(self.dialect(sql), tuple(params))
                try:
                    for r in cur:
                        yield self.backend.row_dict(r)
                finally:
                    del cur
        except self._errors as exc:
            if self.backend.is_missing_table(exc):
                return
            raise StoreError(f"cannot read {self.backend.describe()}: {exc}") from exc

    def execute_fn(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` on a read connection (use :meth:`dialect` for its SQL).
        The engine's errors are raised as :class:`StoreError`."""
        try:
            with self._reader() as conn:
                return fn(conn)
        except self._errors as exc:
            raise StoreError(f"cannot read {self.backend.describe()}: {exc}") from exc

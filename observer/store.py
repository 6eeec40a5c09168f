"""Durable history: events, crashes, the audit log and checkpoints, in SQLite.

Threading rules
    One writer thread (started by :class:`HistoryStore`) owns the only
    writing connection. :meth:`HistoryStore.record` may be called from any
    thread and only appends to a queue (O(1)); the writer batches rows and
    commits every ``batch_interval`` seconds or ``batch_rows`` rows, so a
    thousand events a second cost a few small transactions. Every query method
    opens its own short-lived read connection (WAL mode: readers never block
    the writer), so they too may be called from any thread. Queries see what
    has been committed: call :meth:`HistoryStore.flush` first to include
    everything recorded so far.

Failure
    If the database cannot be written (disk full, read-only file, size cap
    reached), the error is logged once, rows are kept in memory (up to
    ``max_pending``; older ones are then dropped and counted in
    :meth:`HistoryStore.stats`), and the writer retries every
    ``retry_interval`` seconds; the observer keeps running. The audit log is
    the exception: :meth:`HistoryStore.audit` raises :class:`AuditError` when
    the row cannot be committed, so a destructive action is refused rather
    than done unrecorded (``require_audit=False`` turns that off).

Time travel
    The writer replays the stream into a light process table per node (no
    counters) and writes it as a checkpoint at every snapshot and every
    ``checkpoint_events`` events or ``checkpoint_interval`` seconds.
    :meth:`HistoryStore.tree_at` loads the last checkpoint at or before ``t``
    and replays the stored events up to ``t`` with the same code.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from .crashes import SCHEMA as _CRASH_SCHEMA
from .crashes import SQL as _CRASH_SQL
from .crashes import rows_for as _crash_rows
from .model import pid_key

__all__ = ["SCHEMA_VERSION", "AuditError", "HistoryStore", "StoreError", "replay"]

log = logging.getLogger("observer.store")
audit_log = logging.getLogger("observer.audit")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    seq INTEGER,
    time REAL NOT NULL,
    recv_time REAL NOT NULL,
    kind TEXT NOT NULL,
    pid TEXT,
    name TEXT,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_node_time ON events (node, time);
CREATE INDEX IF NOT EXISTS events_node_id ON events (node, id);
CREATE INDEX IF NOT EXISTS events_kind_time ON events (kind, time);
CREATE TABLE IF NOT EXISTS crashes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    seq INTEGER,
    time REAL NOT NULL,
    pid TEXT,
    name TEXT,
    label TEXT,
    supervisor TEXT,
    exception TEXT,
    reason TEXT,
    traceback TEXT
);
CREATE INDEX IF NOT EXISTS crashes_node_time ON crashes (node, time);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    who TEXT,
    from_addr TEXT,
    node TEXT,
    action TEXT NOT NULL,
    target TEXT,
    args TEXT,
    result TEXT,
    ok INTEGER,
    done_time REAL
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    time REAL NOT NULL,
    seq INTEGER,
    event_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS checkpoints_node_time ON checkpoints (node, time);
"""

_SQL = {
    "event": "INSERT INTO events (node, seq, time, recv_time, kind, pid, name, json) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "crash": "INSERT INTO crashes (node, seq, time, pid, name, label, supervisor, exception, reason, traceback) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "checkpoint": "INSERT INTO checkpoints (node, time, seq, event_id, count, json) "
    "VALUES (?, ?, ?, (SELECT COALESCE(MAX(id), 0) FROM events), ?, ?)",
    "audit_result": "UPDATE audit SET result = ?, ok = ?, done_time = ? WHERE id = ?",
    **_CRASH_SQL,
}

_SLIM = (
    "pid",
    "name",
    "label",
    "kind",
    "status",
    "supervisor",
    "parent",
    "child_id",
    "restarts",
    "trap_exit",
    "started_at",
)


CommitListener = Callable[[str, dict[str, Any]], None]
"""``listener(kind, row)`` after a commit: ``audit`` (a new row), ``audit_result``
(``{"id", "ok", "result", "done_time"}``) or ``crash`` (a crash report's columns)."""


class StoreError(Exception):
    """The history database cannot be used."""


class AuditError(StoreError):
    """The audit row could not be committed: do not carry out the action."""


# -- replay (shared by the writer and tree_at) ------------------------------------------------


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    out = {k: rec.get(k) for k in _SLIM}
    out["links"] = set(rec.get("links") or ())
    return out


def replay(procs: dict[str, dict[str, Any]], names: dict[str, str], ev: dict[str, Any]) -> None:
    """Apply one ``ev`` message to a light process table (idempotently)."""
    kind = ev.get("ev")
    if kind == "spawn":
        pid = str(ev.get("pid"))
        keys = ("name", "label", "parent", "supervisor", "child_id", "kind", "restarts")
        fields = {k: ev[k] for k in keys if k in ev}
        rec = procs.get(pid)
        if rec is None:
            rec = _slim({"pid": pid, "status": "running", "started_at": ev.get("time")})
            if fields.get("kind") == "supervisor":
                rec["trap_exit"] = True
            procs[pid] = rec
        rec.update(fields)
        if fields.get("name"):
            names[fields["name"]] = pid
    elif kind == "exit":
        rec = procs.pop(str(ev.get("pid")), None)
        if rec is not None:
            pid = rec["pid"]
            for other in rec["links"]:
                o = procs.get(other)
                if o is not None:
                    o["links"].discard(pid)
            if rec.get("name") and names.get(rec["name"]) == pid:
                del names[rec["name"]]
    elif kind in ("link", "unlink"):
        a, b = procs.get(str(ev.get("a"))), procs.get(str(ev.get("b")))
        if a is not None and b is not None:
            if kind == "link":
                a["links"].add(b["pid"])
                b["links"].add(a["pid"])
            else:
                a["links"].discard(b["pid"])
                b["links"].discard(a["pid"])
    elif kind == "register":
        name, pid_ = ev.get("name"), ev.get("pid")
        if isinstance(name, str):
            old = names.pop(name, None)
            if old in procs and procs[old].get("name") == name:
                procs[old]["name"] = None
            if pid_ is not None:
                names[name] = str(pid_)
                if pid_ in procs:
                    procs[pid_]["name"] = name
    elif kind == "update":
        rec = procs.get(str(ev.get("pid")))
        if rec is not None:
            for k in ("name", "label", "supervisor", "child_id", "kind", "restarts"):
                if k in ev:
                    rec[k] = ev[k]
    elif kind in ("suspend", "resume"):
        rec = procs.get(str(ev.get("pid")))
        if rec is not None:
            rec["status"] = "suspended" if kind == "suspend" else "waiting"
    elif kind == "restart":
        rec = procs.get(str(ev.get("new_pid")))
        if rec is not None and ev.get("restarts") is not None:
            rec["restarts"] = ev["restarts"]


def _event_pid(ev: dict[str, Any]) -> str | None:
    kind = ev.get("ev")
    if kind == "restart":
        return ev.get("new_pid") or ev.get("old_pid")
    if kind in ("link", "unlink"):
        return ev.get("a")
    if kind in ("monitor", "demonitor"):
        return ev.get("watcher")
    if kind == "gave_up":
        return ev.get("supervisor")
    p = ev.get("pid")
    return str(p) if p is not None else None


class _NodeState:
    def __init__(self) -> None:
        self.procs: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}
        self.pending: list[dict[str, Any]] | None = None
        self.snap_seq = -1
        self.seq: int | None = None
        self.since_cp = 0
        self.last_cp = time.monotonic()
        self.last_time = 0.0


class HistoryStore:
    """SQLite history of attached nodes. See the module docstring for the threading rules."""

    def __init__(
        self,
        path: str,
        *,
        batch_interval: float = 0.1,
        batch_rows: int = 500,
        checkpoint_events: int = 5000,
        checkpoint_interval: float = 60.0,
        max_pending: int = 100_000,
        retry_interval: float = 5.0,
        require_audit: bool = True,
        max_bytes: int | None = None,
        store_traces: bool = True,
    ) -> None:
        self.path = str(path)
        self.batch_interval = batch_interval
        self.batch_rows = batch_rows
        self.checkpoint_events = checkpoint_events
        self.checkpoint_interval = checkpoint_interval
        self.max_pending = max_pending
        self.retry_interval = retry_interval
        self.require_audit = require_audit
        self.max_bytes = max_bytes
        self.store_traces = store_traces
        self._q: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._backlog: deque[tuple[str, tuple[Any, ...]]] = deque()
        self._nodes: dict[str, _NodeState] = {}
        self._conn: sqlite3.Connection | None = None
        self._error: str | None = None
        self._next_retry = 0.0
        self._dropped = 0
        self._written = 0
        self._recorded = 0
        self._closed = False
        self._listeners: list[CommitListener] = []
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, name="observer-store", daemon=True)
        self._thread.start()
        self._opened.wait(30)
        if self._error and "newer observer" in self._error:
            self.close()
            raise StoreError(self._error)

    # -- writing (any thread) -------------------------------------------------------------------

    def record(self, node: str, msg: dict[str, Any]) -> None:
        """Queue one message from ``node``'s agent (events, snapshot parts, gaps;
        ``{"t": "status", ...}`` from the attachment). Samples are ignored. Never blocks."""
        t = msg.get("t")
        if t == "samples" or self._closed:
            return
        if t == "ev" and msg.get("ev") == "trace" and not self.store_traces:
            return
        self._q.put(("msg", node, msg, time.time()))

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener(kind, row)`` on the writer thread once audit rows, audit
        results and crash reports are committed (for live pushes). It must not
        block; one that raises is logged and kept."""
        self._listeners.append(listener)

    def _committed(self, kind: str, build: Callable[[], dict[str, Any]]) -> None:
        """Tell the listeners (writer thread); a row that cannot be built (an audit
        result cut at 10,000 characters is not JSON) or a listener that raises is logged."""
        try:
            row = build()
        except Exception:
            log.exception("history store: could not describe a committed %s row", kind)
            return
        for listener in list(self._listeners):
            try:
                listener(kind, row)
            except Exception:
                log.exception("history store: commit listener failed")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is committed (or failed). True if it was written."""
        if self._closed:
            return False
        done = threading.Event()
        self._q.put(("flush", done))
        return done.wait(timeout) and not self._backlog

    def audit(
        self,
        who: str | None,
        from_addr: str | None,
        action: str,
        target: str | None = None,
        args: dict[str, Any] | None = None,
        *,
        node: str | None = None,
        timeout: float = 5.0,
    ) -> int:
        """Write an audit row *before* a destructive action and return its id.

        Blocks until the row is committed. Raises :class:`AuditError` if it
        cannot be (with ``require_audit=False``: logs and returns -1)."""
        now = time.time()
        audit_log.info("audit: %s from %s: %s %s on %s %s", who, from_addr, action, target, node, _brief_json(args))
        row = (now, who, from_addr, node, action, target, json.dumps(args or {}, default=str))
        fut: Future[int] = Future()
        if self._closed:
            fut.set_exception(AuditError("the history store is closed"))
        else:
            self._q.put(("audit", row, fut))
        try:
            return fut.result(timeout)
        except Exception as exc:
            if self.require_audit:
                raise AuditError(f"audit log unavailable, action refused: {exc}") from exc
            log.error("audit row for %s %s not written: %s", action, target, exc)
            return -1

    def audit_result(self, audit_id: int, result: Any, ok: bool = True) -> None:
        """Record the outcome of an audited action (queued; committed with the next batch)."""
        audit_log.info("audit #%s result: %s %s", audit_id, "ok" if ok else "failed", _brief_json(result))
        if audit_id < 0 or self._closed:
            return
        self._q.put(("audit_result", (json.dumps(result, default=str)[:10_000], int(ok), time.time(), audit_id)))

    def close(self, timeout: float = 10.0) -> None:
        """Flush and stop the writer thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._q.put(("close",))
        self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """``{"healthy", "error", "pending", "dropped", "written", "recorded"}``."""
        return {
            "healthy": self._error is None,
            "error": self._error,
            "pending": len(self._backlog) + self._q.qsize(),
            "dropped": self._dropped,
            "written": self._written,
            "recorded": self._recorded,
            "path": self.path,
        }

    # -- the writer thread --------------------------------------------------------------------

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=True)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if self.max_bytes:
                page = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count={max(8, int(self.max_bytes) // int(page))}")
            conn.execute("BEGIN")
            for stmt in (_SCHEMA + _CRASH_SCHEMA).split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif int(row[0]) > SCHEMA_VERSION:
                conn.execute("ROLLBACK")
                raise StoreError(f"{self.path} was written by a newer observer (schema {row[0]} > {SCHEMA_VERSION})")
            # (migrations from older versions go here)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _run(self) -> None:
        try:
            self._open()
        except (sqlite3.Error, OSError, StoreError) as exc:
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
            while len(batch) < 5000:
                try:
                    batch.append(self._q.get_nowait())
                except queue.Empty:
                    break
            waiters: list[threading.Event] = []
            for it in batch:
                kind = it[0]
                try:
                    if kind == "msg":
                        self._ingest(it[1], it[2], it[3])
                    elif kind == "audit":
                        self._write_audit(it[1], it[2])
                    elif kind == "audit_result":
                        self._push("audit_result", it[1])
                    elif kind == "flush":
                        waiters.append(it[1])
                    elif kind == "close":
                        stop = True
                except Exception:  # never let one odd message kill the writer
                    log.exception("history store: could not record %.200r", it)
            now = time.monotonic()
            for node, st in self._nodes.items():
                if st.since_cp and now - st.last_cp >= self.checkpoint_interval:
                    self._checkpoint(node, st)
            if self._backlog and (
                stop or waiters or len(self._backlog) >= self.batch_rows or now - last_commit >= self.batch_interval
            ):
                if self._error is None or now >= self._next_retry or stop or waiters:
                    self._write_backlog()
                last_commit = now
            for w in waiters:
                w.set()
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _push(self, stmt: str, row: tuple[Any, ...]) -> None:
        self._backlog.append((stmt, row))
        while len(self._backlog) > self.max_pending:
            self._backlog.popleft()
            self._dropped += 1

    def _fail(self, exc: BaseException) -> None:
        first = self._error is None
        self._error = f"{type(exc).__name__}: {exc}"
        self._next_retry = time.monotonic() + self.retry_interval
        if first:
            log.error(
                "history store %s cannot be written (%s); keeping up to %d rows in memory "
                "and retrying every %gs -- the observer keeps running",
                self.path,
                self._error,
                self.max_pending,
                self.retry_interval,
            )
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _ensure_conn(self) -> sqlite3.Connection | None:
        if self._conn is None:
            try:
                self._open()
            except (sqlite3.Error, OSError, StoreError) as exc:
                self._fail(exc)
        return self._conn

    def _write_backlog(self) -> None:
        conn = self._ensure_conn()
        if conn is None:
            return
        rows = list(self._backlog)
        try:
            conn.execute("BEGIN")
            i = 0
            while i < len(rows):
                stmt = rows[i][0]
                j = i
                while j < len(rows) and rows[j][0] == stmt:
                    j += 1
                conn.executemany(_SQL[stmt], [r[1] for r in rows[i:j]])
                i = j
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            self._fail(exc)
            return
        for _ in range(len(rows)):
            self._backlog.popleft()
        self._written += len(rows)
        if self._listeners:
            for stmt, r in rows:
                if stmt == "audit_result":
                    self._committed("audit_result", functools.partial(_result_row, r))
                elif stmt == "crash_report":
                    self._committed("crash", functools.partial(_crash_row, r))
        if self._error is not None:
            log.warning(
                "history store %s is writable again (%s); %d rows were dropped meanwhile",
                self.path,
                self._error,
                self._dropped,
            )
            self._error = None

    def _write_audit(self, row: tuple[Any, ...], fut: Future[int]) -> None:
        conn = self._ensure_conn()
        if conn is None:
            fut.set_exception(AuditError(self._error or "history store unavailable"))
            return
        try:
            cur = conn.execute(
                "INSERT INTO audit (time, who, from_addr, node, action, target, args) VALUES (?, ?, ?, ?, ?, ?, ?)", row
            )
            aid = int(cur.lastrowid or 0)
            fut.set_result(aid)
            self._committed("audit", lambda: _audit_row(aid, row))
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)
            fut.set_exception(AuditError(str(exc)))

    # -- ingest (writer thread) ------------------------------------------------------------------

    def _ingest(self, node: str, msg: dict[str, Any], recv: float) -> None:
        self._recorded += 1
        st = self._nodes.get(node)
        if st is None:
            st = self._nodes[node] = _NodeState()
        t = msg.get("t")
        if t == "ev":
            seq = msg.get("seq")
            if isinstance(seq, int) and seq <= st.snap_seq:
                return
            evtime = float(msg.get("time") or recv)
            pid = _event_pid(msg)
            kind = str(msg.get("ev"))
            rec = st.procs.get(pid) if pid else None
            name = (rec.get("name") or rec.get("label")) if rec else msg.get("name") or msg.get("label")
            if kind == "exit" and msg.get("reason_kind") == "exception":
                self._push(
                    "crash",
                    (
                        node,
                        seq,
                        evtime,
                        pid,
                        (rec or msg).get("name"),
                        (rec or msg).get("label"),
                        rec.get("supervisor") if rec else None,
                        msg.get("exception"),
                        msg.get("reason"),
                        msg.get("traceback"),
                    ),
                )
            body = msg
            if kind == "exit" and msg.get("report"):
                for stmt, row in _crash_rows(node, seq, evtime, msg):
                    self._push(stmt, row)
                body = {**msg, "report": True}  # the report itself is in crash_reports (observer/crashes.py)
            self._push("event", (node, seq, evtime, recv, kind, pid, name, json.dumps(body, default=str)))
            replay(st.procs, st.names, msg)
            st.seq = seq if isinstance(seq, int) else st.seq
            st.last_time = max(st.last_time, evtime)
            st.since_cp += 1
            if st.since_cp >= self.checkpoint_events:
                self._checkpoint(node, st)
        elif t == "snapshot_begin":
            st.pending = []
        elif t == "snapshot_chunk":
            if st.pending is not None:
                st.pending.extend(msg.get("procs") or ())
        elif t == "snapshot_end":
            if st.pending is None:
                return
            st.procs = {str(r.get("pid")): _slim(r) for r in st.pending}
            st.names = {str(k): str(v) for k, v in (msg.get("names") or {}).items()}
            st.pending = None
            st.snap_seq = int(msg.get("seq") or 0)
            st.seq = st.snap_seq
            st.last_time = recv
            info = {"t": "snapshot", "seq": st.snap_seq, "count": len(st.procs)}
            self._push("event", (node, st.snap_seq, recv, recv, "snapshot", None, None, json.dumps(info)))
            self._checkpoint(node, st, at=recv)
        elif t in ("gap", "status", "error"):
            body = {k: v for k, v in msg.items()}
            self._push("event", (node, None, recv, recv, str(t), None, None, json.dumps(body, default=str)))
            if t == "status" and msg.get("status") == "down":
                st.pending = None

    def _checkpoint(self, node: str, st: _NodeState, at: float | None = None) -> None:
        procs = sorted(
            ({**r, "links": sorted(r["links"])} for r in st.procs.values()),
            key=lambda r: pid_key(str(r.get("pid"))),
        )
        body = json.dumps({"procs": procs, "names": st.names}, default=str, separators=(",", ":"))
        when = at if at is not None else (st.last_time or time.time())
        self._push("checkpoint", (node, when, st.seq, len(procs), body))
        st.since_cp = 0
        st.last_cp = time.monotonic()

    # -- reading (any thread) --------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=5.0)
            conn.execute("PRAGMA query_only=1")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        return conn

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        conn = self._reader()
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        finally:
            conn.close()

    def nodes(self) -> list[str]:
        """Node names with stored history."""
        return [r[0] for r in self._query("SELECT DISTINCT node FROM checkpoints ORDER BY node")]

    def events(
        self,
        node: str | None = None,
        kinds: Iterable[str] | None = None,
        q: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 200,
        pid: str | None = None,
    ) -> list[dict[str, Any]]:
        """Stored events, newest first. ``q`` searches (case-insensitively) the
        whole event: reason, traceback, pid, name, child id..."""
        where, params = _filters(node, since, until)
        if kinds is not None:
            ks = list(kinds)
            if not ks:
                return []
            where.append(f"kind IN ({','.join('?' * len(ks))})")
            params.extend(ks)
        if pid is not None:
            where.append("(pid = ? OR json LIKE ? ESCAPE '\\')")
            params.extend([pid, f"%{_like(pid)}%"])
        if q:
            where.append("(json LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\')")
            params.extend([f"%{_like(q)}%", f"%{_like(q)}%"])
        sql = "SELECT id, node, time, kind, pid, name, json FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        params.append(int(limit))
        out = []
        for r in self._query(sql, params):
            d = json.loads(r["json"])
            d.update(
                {
                    "id": r["id"],
                    "node": r["node"],
                    "time": r["time"],
                    "kind": r["kind"],
                    "pid": r["pid"],
                    "proc_name": r["name"],
                }
            )
            out.append(d)
        return out

    def crashes(
        self,
        node: str | None = None,
        q: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Exits with an exception, newest first; ``q`` searches exception, reason,
        traceback, pid, name and label."""
        where, params = _filters(node, since, until)
        if q:
            like = f"%{_like(q)}%"
            where.append(
                "("
                + " OR ".join(
                    f"{c} LIKE ? ESCAPE '\\'" for c in ("exception", "reason", "traceback", "pid", "name", "label")
                )
                + ")"
            )
            params.extend([like] * 6)
        sql = "SELECT * FROM crashes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time DESC, id DESC LIMIT ?"
        params.append(int(limit))
        return [dict(r) for r in self._query(sql, params)]

    def audits(self, limit: int = 200, node: str | None = None) -> list[dict[str, Any]]:
        """Audit rows, newest first (``args`` and ``result`` decoded)."""
        sql = "SELECT * FROM audit"
        params: list[Any] = []
        if node is not None:
            sql += " WHERE node = ?"
            params.append(node)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(int(limit))
        out = []
        for r in self._query(sql, params):
            d = dict(r)
            d["args"] = json.loads(d["args"]) if d.get("args") else None
            d["result"] = json.loads(d["result"]) if d.get("result") else None
            out.append(d)
        return out

    def tree_at(self, node: str, t: float) -> dict[str, Any] | None:
        """The process table of ``node`` as it was at time ``t``: ``{"node", "time",
        "checkpoint_time", "replayed", "procs": [records by pid], "names"}``, or
        None if nothing was stored for it at or before ``t``."""
        conn = self._reader()
        try:
            cp = conn.execute(
                "SELECT time, event_id, json FROM checkpoints WHERE node = ? AND time <= ? "
                "ORDER BY time DESC, id DESC LIMIT 1",
                (node, t),
            ).fetchone()
            if cp is None:
                return None
            body = json.loads(cp["json"])
            procs = {str(r["pid"]): {**r, "links": set(r.get("links") or ())} for r in body["procs"]}
            names = dict(body.get("names") or {})
            n = 0
            cur = conn.execute(
                "SELECT json FROM events WHERE node = ? AND id > ? AND time <= ? AND kind NOT IN "
                "('snapshot', 'gap', 'status', 'error') ORDER BY id",
                (node, cp["event_id"], t),
            )
            for (js,) in cur:
                replay(procs, names, json.loads(js))
                n += 1
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        finally:
            conn.close()
        rows = sorted(({**r, "links": sorted(r["links"])} for r in procs.values()), key=lambda r: pid_key(r["pid"]))
        return {"node": node, "time": t, "checkpoint_time": cp["time"], "replayed": n, "procs": rows, "names": names}

    def timeline(self, node: str, buckets: int = 100) -> dict[str, Any]:
        """Time range and event density for a scrubber: ``{"node", "start", "end",
        "bucket_width", "buckets": [{"t", "events", "exits", "restarts", "crashes"}],
        "checkpoints": [times]}`` (``start``/``end`` None when nothing is stored)."""
        rng = self._query("SELECT MIN(time), MAX(time), COUNT(*) FROM events WHERE node = ?", (node,))
        start, end, _count = (rng[0][0], rng[0][1], rng[0][2]) if rng else (None, None, 0)
        cps = [r[0] for r in self._query("SELECT time FROM checkpoints WHERE node = ? ORDER BY time", (node,))]
        if start is None or end is None:
            return {"node": node, "start": None, "end": None, "bucket_width": None, "buckets": [], "checkpoints": cps}
        buckets = max(1, int(buckets))
        width = max((end - start) / buckets, 1e-6)
        out = [{"t": start + i * width, "events": 0, "exits": 0, "restarts": 0, "crashes": 0} for i in range(buckets)]
        # both queries keep to [start, end]: rows written since the range was
        # read (a live node) fall outside it, and would index past the buckets
        rows = self._query(
            "SELECT MIN(MAX(CAST((time - ?) / ? AS INTEGER), 0), ?) AS b, COUNT(*), SUM(kind = 'exit'), "
            "SUM(kind = 'restart') FROM events WHERE node = ? AND time BETWEEN ? AND ? GROUP BY b",
            (start, width, buckets - 1, node, start, end),
        )
        for b, n, ex, rs in rows:
            out[int(b)].update(events=n, exits=ex or 0, restarts=rs or 0)
        for b, n in self._query(
            "SELECT MIN(MAX(CAST((time - ?) / ? AS INTEGER), 0), ?) AS b, COUNT(*) FROM crashes "
            "WHERE node = ? AND time BETWEEN ? AND ? GROUP BY b",
            (start, width, buckets - 1, node, start, end),
        ):
            out[int(b)]["crashes"] = n
        return {"node": node, "start": start, "end": end, "bucket_width": width, "buckets": out, "checkpoints": cps}


def _audit_row(aid: int, row: tuple[Any, ...]) -> dict[str, Any]:
    """A new audit row as :meth:`HistoryStore.audits` gives it (for commit listeners)."""
    cols = ("time", "who", "from_addr", "node", "action", "target")
    return dict(zip(cols, row, strict=False)) | {
        "id": aid,
        "args": json.loads(row[6]),
        "ok": None,
        "result": None,
        "done_time": None,
    }


def _result_row(r: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": r[3], "result": json.loads(r[0]), "ok": r[1], "done_time": r[2]}


def _crash_row(r: tuple[Any, ...]) -> dict[str, Any]:
    cols = ("node", "signature", "seq", "time", "pid", "name", "supervisor", "child_id", "exception", "reason")
    return dict(zip(cols, r, strict=False))


def _filters(node: str | None, since: float | None, until: float | None) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if node is not None:
        where.append("node = ?")
        params.append(node)
    if since is not None:
        where.append("time >= ?")
        params.append(since)
    if until is not None:
        where.append("time <= ?")
        params.append(until)
    return where, params


def _like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _brief_json(v: Any) -> str:
    try:
        return json.dumps(v, default=str)[:300]
    except Exception:
        return repr(v)[:300]

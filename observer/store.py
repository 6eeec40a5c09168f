"""Durable history: events, crashes, the audit log and checkpoints.

The history is written through the one database layer (:mod:`observer.db`):
a :class:`HistoryStore` owns a :class:`observer.db.Database` (SQLite by
default) and folds what agents send into its rows.

Threading rules
    :meth:`HistoryStore.record` may be called from any thread and only
    appends to the database's queue (never blocks; O(1) but for a snapshot
    chunk, whose records it makes compact first); the database's
    writer thread folds each message (:meth:`HistoryStore._ingest`) and
    buffers its rows, committed every ``batch_interval`` seconds or
    ``batch_rows`` rows, so a thousand events a second cost a few small
    transactions. Query methods may be called from any thread and see what
    has been committed: call :meth:`HistoryStore.flush` first to include
    everything recorded so far.

Failure
    If the database cannot be written (disk full, read-only file, size cap
    reached), the error is logged once, rows are kept in memory (up to
    ``max_pending``; older ones are then dropped and counted in
    :meth:`HistoryStore.stats`), and the writer retries every
    ``retry_interval`` seconds; the observer keeps running and nothing
    raises into the caller of :meth:`HistoryStore.record`. The audit log is
    the exception: :meth:`HistoryStore.audit` raises :class:`AuditError` when
    the row cannot be committed, so a destructive action is refused rather
    than done unrecorded (``require_audit=False`` turns that off).

Time travel
    The writer folds the stream per node with the live model's reducer
    (:mod:`observer.model.history`) and writes the state as a checkpoint at
    every snapshot and every ``checkpoint_events`` events or
    ``checkpoint_interval`` seconds (staggered: each node at its own phase of
    the interval, see :meth:`HistoryStore._tick`). :meth:`HistoryStore.tree_at` restores the
    last checkpoint at or before ``t`` and replays the stored messages up to
    ``t`` with the same reducer, so it draws what the live model showed then.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from .db import SCHEMA_VERSION, AuditError, Database, StoreError, open_backend
from .db import crashes as crash_db
from .db import history as history_db
from .model import State, build_tree, checkpoint_json, history_state, proc_table, reduce, replay, restore
from .model.snapshot import freeze_long_lived, no_gc, prepare
from .redaction import redact_args

__all__ = ["SCHEMA_VERSION", "AuditError", "HistoryStore", "StoreError"]

log = logging.getLogger("observer.store")
audit_log = logging.getLogger("observer.audit")

CommitListener = Callable[[str, dict[str, Any]], None]
"""``listener(kind, row)`` after a commit: ``audit`` (a new row), ``audit_result``
(``{"id", "ok", "result", "done_time"}``) or ``crash`` (a crash's columns, without
its report and traceback)."""


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


_GOLDEN = 0.6180339887498949
"""The nodes' checkpoint phases: the i-th node seen is at ``frac(i * _GOLDEN)`` of the
interval, a sequence that spreads any number of nodes evenly (no two close together)."""


class _NodeState:
    def __init__(self, phase: float) -> None:
        self.state: State = history_state()
        self.since_cp = 0
        self.last_cp = time.monotonic()
        self.phase = phase
        """Where in ``checkpoint_interval`` this node's timed checkpoints fall (0 to 1)."""
        self.next_cp = 0.0
        """When (monotonic) the next timed checkpoint is due (see ``HistoryStore._due``)."""
        self.last_time = 0.0
        self.recording = False
        """Whether this observer wrote the node's history at its last message (see ``_records``)."""


class HistoryStore:
    """The history of attached nodes, on a :class:`observer.db.Database`
    (see the module docstring for the threading rules).

    ``path`` is the SQLite file (created readable by its owner only) or a
    ``postgresql://`` URL (a history shared with other observer servers), or
    pass an open ``db`` (then ``path`` is only a label and the size/batching
    options are the database's). Raises :class:`StoreError` if the database was
    written by a newer observer (or a URL cannot be used: no psycopg, malformed)."""

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
        db: Database | None = None,
    ) -> None:
        self.path = str(path)
        """Where the history is: the SQLite file, or the PostgreSQL database (without its password)."""
        self.checkpoint_events = checkpoint_events
        self.checkpoint_interval = checkpoint_interval
        self.require_audit = require_audit
        self.store_traces = store_traces
        self._nodes: dict[str, _NodeState] = {}
        self._recorded = 0
        self._closed = False
        self._muted = False
        if db is None:
            backend = open_backend(self.path, max_bytes=max_bytes)
            self.path = backend.describe()  # a URL's password is not shown by stats()
            db = Database(
                backend,
                batch_interval=batch_interval,
                batch_rows=batch_rows,
                max_pending=max_pending,
                retry_interval=retry_interval,
            )
        self.db = db
        self._listeners: list[CommitListener] = []
        self._call_soon = self.db.call_soon
        self.db.on_tick(self._tick)
        self.db.on_commit(self._rows_committed)

    # -- writing (any thread) -------------------------------------------------------------------

    def record(self, node: str, msg: dict[str, Any]) -> None:
        """Queue one message from ``node``'s agent (events, snapshot parts, gaps;
        ``{"t": "status", ...}`` from the attachment). Samples are ignored. Never blocks.

        A snapshot chunk's records are made compact here, before they wait in the queue
        (:func:`observer.model.snapshot.prepare`, what the writer would do first): a wire
        record is ~1.5 KB, and behind twenty 50,000-process nodes just attached the queue held
        a hundred chunks of them (~300 MB, the observer's peak); the work is the same, done
        sooner, so the writer has less left to do when the attach ends."""
        t = msg.get("t")
        if t == "samples" or self._closed:
            return
        if t == "ev" and msg.get("ev") == "trace" and not self.store_traces:
            return
        if t == "snapshot_chunk" and msg.get("procs"):
            try:
                with no_gc():
                    msg = {**msg, "procs": [prepare(r) for r in msg["procs"]]}
            except Exception:  # not records after all: the writer meets them as they came (and logs)
                pass
        self._call_soon(self._ingest, node, msg, time.time())

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener(kind, row)`` on the writer thread once audit rows, audit
        results and crashes are committed (for live pushes); a crash on a node whose
        history another observer records (a shared database) as soon as it is heard.
        It must not block; one that raises is logged and kept."""
        self._listeners.append(listener)

    def _committed(self, kind: str, row: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, row)
            except Exception:
                log.exception("history store: commit listener failed")

    def _rows_committed(self, rows: list[tuple[str, tuple[Any, ...]]]) -> None:
        if not self._listeners:
            return
        for sql, r in rows:
            if sql == history_db.AUDIT_RESULT_SQL:
                try:
                    result = json.loads(r[0])
                except ValueError:  # cut at 10,000 characters: no longer JSON, not pushed
                    continue
                self._committed("audit_result", {"id": r[3], "result": result, "ok": r[1], "done_time": r[2]})
            elif sql == crash_db.INSERT_SQL:
                row = dict(zip(crash_db.INSERTED, r, strict=True))
                del row["report"], row["traceback"]
                self._committed("crash", row)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything recorded so far is committed (or failed). True if it was written."""
        if self._closed:
            return False
        return self.db.flush(timeout)

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
        args = redact_args(args)  # the agent's rules: what the mailbox view masks, the audit log masks too
        audit_log.info("audit: %s from %s: %s %s on %s %s", who, from_addr, action, target, node, _brief_json(args))
        row = (now, who, from_addr, node, action, target, json.dumps(args or {}, default=str))
        sql = self.db.dialect(history_db.AUDIT_SQL)
        try:
            if self._closed:
                raise StoreError("the history store is closed")
            aid = int(self.db.execute_write_fn(lambda conn: conn.execute(sql, row).fetchone()[0], timeout=timeout))
        except Exception as exc:
            if self.require_audit:
                raise AuditError(f"audit log unavailable, action refused: {exc}") from exc
            log.error("audit row for %s %s not written: %s", action, target, exc)
            return -1
        if self._listeners:
            cols = ("time", "who", "from_addr", "node", "action", "target")
            new = dict(zip(cols, row, strict=False)) | {"id": aid, "args": json.loads(row[6])}
            self._call_soon(self._committed, "audit", new | {"ok": None, "result": None, "done_time": None})
        return aid

    def audit_result(self, audit_id: int, result: Any, ok: bool = True) -> None:
        """Record the outcome of an audited action (queued; committed with the next batch)."""
        audit_log.info("audit #%s result: %s %s", audit_id, "ok" if ok else "failed", _brief_json(result))
        if audit_id < 0 or self._closed:
            return
        row = (json.dumps(result, default=str)[:10_000], int(ok), time.time(), audit_id)
        self.db.write_nowait(history_db.AUDIT_RESULT_SQL, row)

    def close(self, timeout: float = 10.0) -> None:
        """Flush and stop the database's writer thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.db.close(timeout)

    def stats(self) -> dict[str, Any]:
        """``{"healthy", "error", "pending", "dropped", "written", "recorded", "path"}``."""
        return self.db.stats() | {"recorded": self._recorded, "path": self.path}

    # -- ingest (the database's writer thread) --------------------------------------------------

    def _push(self, sql: str, row: tuple[Any, ...], size: int = 0) -> None:
        if not self._muted:
            self.db.buffer(sql, row, size=size)
        elif sql == crash_db.INSERT_SQL:  # another observer writes it: heard here all the same
            self._rows_committed([(sql, row)])

    def _tick(self, now: float) -> None:
        """The timed checkpoints, staggered: each node has its own phase in the interval
        (``_NodeState.phase``), and one tick writes at most one (the writer ticks every
        ``batch_interval`` at least), so twenty nodes attached together do not all
        checkpoint in the same second every minute, stalling the writer (and the
        updates, which share the GIL with it) for the time of twenty."""
        for node, st in self._nodes.items():
            if not (st.since_cp and now >= st.next_cp and st.recording):
                continue
            if st.since_cp < self._worth(st):  # too few events yet: try again at its next phase
                st.next_cp = self._due(st, now, gap=0.0)
                continue
            self._muted = False
            self._checkpoint(node, st)
            return

    def _worth(self, st: _NodeState) -> int:
        """How many events a timed checkpoint must cover to be written: a tenth of the node's
        processes (at most ``checkpoint_events``). A checkpoint costs time and room in
        proportion to the node's size (7 MB and ~0.5 s of the writer for 50,000 processes);
        what it saves is the replay of the events since the last one, so a quiet big node is
        not written out again every interval: :meth:`tree_at` replays at most that many
        events on top of the checkpoint it restores, a tenth of the restore's own work."""
        return max(1, min(self.checkpoint_events, len(st.state.graph) // 10))

    def _due(self, st: _NodeState, now: float, *, gap: float | None = None) -> float:
        """The first time of the node's phase at least ``gap`` after ``now`` (by default half an
        interval: after a checkpoint, the next is between 0.5 and 1.5 intervals away)."""
        iv = self.checkpoint_interval
        if iv <= 0:
            return now
        k = math.floor((now + (iv / 2 if gap is None else gap)) / iv - st.phase) + 1
        return (k + st.phase) * iv

    def _records(self, node: str, st: _NodeState, msg: dict[str, Any]) -> bool:
        """Whether this observer writes ``node``'s history. In a database shared by
        several observer servers attached to one node, the one holding the node's
        claim does (:meth:`observer.db.Database.claim`); the others keep folding the
        stream, and one that takes over starts with a checkpoint of what it has.
        A link going down gives the claim up, to a server whose link is up."""
        key = f"history:{node}"
        held = self.db.claim(key)
        if held and not st.recording and st.state.snap_seq >= 0:
            self._muted = False
            self._checkpoint(node, st)
        st.recording = held
        if held and msg.get("t") == "status" and msg.get("status") == "down":
            self.db.release(key)
            st.recording = False
        return held

    def _ingest(self, node: str, msg: dict[str, Any], recv: float) -> None:
        self._recorded += 1
        st = self._nodes.get(node)
        if st is None:
            st = self._nodes[node] = _NodeState((len(self._nodes) * _GOLDEN) % 1.0)
            st.next_cp = self._due(st, st.last_cp)
        self._muted = not self._records(node, st, msg)
        t = msg.get("t")
        if t == "ev":
            seq = msg.get("seq")
            if isinstance(seq, int) and seq <= st.state.snap_seq:
                return
            evtime = float(msg.get("time") or recv)
            pid = _event_pid(msg)
            kind = str(msg.get("ev"))
            rec = st.state.record(pid) if pid else None
            name = (rec.get("name") or rec.get("label")) if rec else msg.get("name") or msg.get("label")
            body = msg
            if kind == "exit":
                for sql, row in crash_db.rows_for(node, seq, evtime, msg, rec):
                    self._push(sql, row)
                if msg.get("report"):
                    body = {**msg, "report": True}  # the report itself is in crashes (observer/db/crashes.py)
            self._push(history_db.EVENT_SQL, (node, seq, evtime, recv, kind, pid, name, json.dumps(body, default=str)))
            st.last_time = max(st.last_time, evtime)
            st.since_cp += 1
        elif t in ("gap", "status", "error"):
            self._push(history_db.EVENT_SQL, (node, None, recv, recv, str(t), None, None, json.dumps(msg, default=str)))
            st.last_time = max(st.last_time, recv)
            st.since_cp += 1
        elif t not in ("snapshot_begin", "snapshot_chunk", "snapshot_end"):
            return
        # the live model's reducer: the checkpoints hold what the operator saw
        st.state, changes = reduce(st.state, msg, recv)
        if t == "snapshot_end" and changes:
            info = {"t": "snapshot", "seq": st.state.snap_seq, "count": len(st.state.graph)}
            row = (node, st.state.snap_seq, recv, recv, "snapshot", None, None, json.dumps(info))
            self._push(history_db.EVENT_SQL, row)
            st.last_time = recv
            # the history's own graph of the node is long-lived too (the attach freezes the live one,
            # after a collection: not again here, on the writer, where it held up the live pushes)
            freeze_long_lived(len(st.state.graph), collect=False)
            self._checkpoint(node, st, at=recv)
        elif st.since_cp >= self.checkpoint_events:
            self._checkpoint(node, st)

    def _checkpoint(self, node: str, st: _NodeState, at: float | None = None) -> None:
        # encoded in slices: the live pushes are not held up meanwhile, and a login waiting
        # for the writer goes through between two slices (observer/db/database.py, "Priority")
        body = checkpoint_json(st.state, self.db.run_urgent)
        when = at if at is not None else (st.last_time or time.time())
        self._push(history_db.CHECKPOINT_SQL, (node, when, st.state.seq, len(st.state.graph), body), len(body))
        st.since_cp = 0
        st.last_cp = time.monotonic()
        st.next_cp = self._due(st, st.last_cp)

    # -- reading (any thread) --------------------------------------------------------------------

    def nodes(self) -> list[str]:
        """Node names with stored history."""
        return history_db.nodes(self.db)

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
        return history_db.events(self.db, node=node, kinds=kinds, q=q, since=since, until=until, limit=limit, pid=pid)

    def crashes(
        self,
        node: str | None = None,
        q: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Crashes in a time window, newest first (see :func:`observer.db.crashes.window`)."""
        return crash_db.window(self.db, node=node, q=q, since=since, until=until, limit=limit)

    def crash_groups(self, node: str | None = None, q: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Crash groups, the latest first (see :func:`observer.db.crashes.groups`)."""
        return crash_db.groups(self.db, node=node, q=q, limit=limit)

    def crash(self, crash_id: int) -> dict[str, Any] | None:
        """One crash with its report and group (see :func:`observer.db.crashes.report`)."""
        return crash_db.report(self.db, crash_id)

    def process_crashes(
        self, node: str, pid: str, supervisor: str | None = None, child_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Crashes of ``pid`` and of its child slot's earlier incarnations
        (see :func:`observer.db.crashes.of_process`)."""
        return crash_db.of_process(self.db, node, pid, supervisor, child_id)

    def find_crash(self, node: str, pid: str, before: float | None = None) -> int | None:
        """The id of ``pid``'s latest crash at or before ``before`` (see :func:`observer.db.crashes.find`)."""
        return crash_db.find(self.db, node, pid, before)

    def audits(self, limit: int = 200, node: str | None = None) -> list[dict[str, Any]]:
        """Audit rows, newest first (``args`` and ``result`` decoded)."""
        return history_db.audits(self.db, limit=limit, node=node)

    def tree_at(
        self, node: str, t: float, *, group_threshold: int = 20, expanded: Iterable[str] = ()
    ) -> dict[str, Any] | None:
        """``node`` as it was at time ``t``: ``{"node", "time", "checkpoint_time",
        "replayed", "procs": [records by pid], "names", "tree"}`` (``tree`` as the
        live model's :meth:`~observer.model.NodeModel.tree`), or None if nothing
        was stored for it at or before ``t``."""
        cp = history_db.checkpoint_at(self.db, node, t)
        rows = list(history_db.events_after(self.db, node, cp["event_id"] if cp is not None else 0, t))
        if cp is None and not rows:
            return None
        state = replay(rows, restore(json.loads(cp["json"])) if cp is not None else None)
        return {
            "node": node,
            "time": t,
            "checkpoint_time": cp["time"] if cp is not None else None,
            "replayed": len(rows),
            "procs": proc_table(state),
            "names": dict(state.names),
            "tree": build_tree(state, node, group_threshold=group_threshold, expanded=list(expanded)),
        }

    def timeline(self, node: str, buckets: int = 100) -> dict[str, Any]:
        """Time range and event density for a scrubber (see :func:`observer.db.history.timeline`)."""
        return history_db.timeline(self.db, node, buckets)


def _brief_json(v: Any) -> str:
    try:
        return json.dumps(v, default=str)[:300]
    except Exception:
        return repr(v)[:300]

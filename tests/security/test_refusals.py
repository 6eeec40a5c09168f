"""A flood of refusals cannot fill the disk: the refusal log writes the first
of each kind, counts the repeats, and caps the rows per window, into a real
history file."""

from __future__ import annotations

from pathlib import Path

from observer.refusals import RefusalLog
from observer.store import HistoryStore


def test_ten_thousand_refusals_from_many_addresses_write_a_bounded_number_of_rows(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.sqlite3"), batch_interval=0.02)
    log = RefusalLog(store, window=3600.0, max_rows=30)  # one window for the whole test
    try:
        for i in range(10_000):
            addr = f"127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"  # every one a new kind
            log.note("socket_connect", "login_required", who="anonymous", addr=addr)
        for _ in range(500):
            log.note("csrf", "csrf", who="op/abc", addr="10.0.0.1", target="POST /api/x")
        assert log.seen == 10_500
        log.flush(force=True)
        store.flush()
        rows = store.audits(limit=5000)
        assert len(rows) <= 30 + 1, len(rows)
        suppressed = [r for r in rows if r["action"] == "refusals_suppressed"]
        assert suppressed and suppressed[0]["args"]["count"] == 10_000 - 30 + 500
        assert all(r["ok"] == 0 for r in rows)
    finally:
        log.close()
        store.close()


def test_repeats_of_one_kind_become_one_counted_row(tmp_path: Path) -> None:
    store = HistoryStore(str(tmp_path / "history.sqlite3"), batch_interval=0.02)
    log = RefusalLog(store, window=3600.0)
    try:
        for _ in range(1000):
            log.note("login", "wrong_token", who="anonymous", addr="192.0.2.7")
        log.flush(force=True)
        store.flush()
        rows = [r for r in store.audits() if r["action"] == "login"]
        assert len(rows) == 2, rows  # the first at once, then "999 more"
        counted = next(r for r in rows if r["args"].get("repeated"))
        assert counted["args"]["repeated"] == 999 and counted["from_addr"] == "192.0.2.7"
    finally:
        log.close()
        store.close()

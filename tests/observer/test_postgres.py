"""The history on PostgreSQL: the same migrations as SQLite, migrated once by
observers opening one database at once, and shared by real ``observer serve``
processes. A real PostgreSQL server throughout (the session's own cluster, see
tests/pgcluster.py); the history, crash and database tests that run on both
backends are in test_db.py, test_store.py and test_crashes.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from click.testing import CliRunner

from examples.demo_system import PAYMENTS
from observer.chaos import ChaosHistory
from observer.cli import main
from observer.db import SCHEMA_VERSION, Database, PostgresBackend, StoreError, open_backend
from observer.db import postgresql as pg
from observer.db import sqlite as lite
from observer.store import HistoryStore
from tests.observer import TOKEN, ev, snapshot, sup, wait_for
from tests.observer.nodes import NodeProcess, clean_env, free_port, login, read_line, stop_process
from tests.observer.test_db import KILLED, REPORT, P
from tests.pgcluster import table_names

LOGIN = "postgres-test-login-token-0123"


def test_both_backends_have_the_same_numbered_migrations() -> None:
    assert [(m.number, m.name) for m in pg.MIGRATIONS_PG] == [(m.number, m.name) for m in lite.MIGRATIONS]
    assert [m.number for m in pg.MIGRATIONS_PG] == list(range(1, SCHEMA_VERSION + 1))


def test_portable_sql_is_spoken_in_postgresql_s_dialect() -> None:
    b = PostgresBackend("postgresql://u@127.0.0.1:1/db")
    assert b.sql("SELECT x FROM t WHERE a = ? AND b LIKE ? ESCAPE '\\' AND c = '?%'") == (
        "SELECT x FROM t WHERE a = %s AND b ILIKE %s ESCAPE '\\' AND c = '?%%'"
    )
    assert b.describe() == "postgresql://u@127.0.0.1:1/db"
    hidden = PostgresBackend("postgresql://u:sesame@h/db?password=sesame&sslmode=require").describe()
    assert "sesame" not in hidden and "sslmode=require" in hidden
    with pytest.raises(StoreError, match="not a PostgreSQL connection URL"):
        PostgresBackend("postgresql://u@h/db?no_such_option=1")


def make_v1_database(url: str) -> None:
    """A PostgreSQL history at schema version 1 (migration 1 only), holding what
    test_db.py's first-release SQLite file holds: a crash in both crash tables,
    one only in ``crashes``, a report only in ``crash_reports``, an audit row."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            pg.MIGRATIONS_PG[0].apply(conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        crash = "INSERT INTO crashes (node, seq, time, pid, name, label, supervisor, exception, reason, traceback) "
        crash += "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        conn.execute(crash, ("n", 8, 1010.0, P(3), "beta", "Beta", P(1), "ZeroDivisionError", "zde", "tb one"))
        conn.execute(crash, ("n", 12, 1020.0, P(9), None, "Delta", P(1), "KeyError", "KeyError('k')", "tb two"))
        reports = "INSERT INTO crash_reports (node, signature, seq, time, pid, name, supervisor, child_id, "
        reports += "exception, reason, json) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        sig = "ZeroDivisionError at app.py:ratio"
        conn.execute(
            reports, ("n", sig, 8, 1010.0, P(3), "beta", P(1), "b", "ZeroDivisionError", "zde", json.dumps(REPORT))
        )
        conn.execute(
            reports,
            ("n", "exit 'killed' of Gamma", 10, 1015.0, P(7), "Gamma", P(1), "c", None, "'killed'", json.dumps(KILLED)),
        )
        conn.execute(
            "INSERT INTO audit (time, who, from_addr, node, action, target, args) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (1005.0, "ada", "10.0.0.1", "n", "kill", P(7), "{}"),
        )


def test_observers_opening_one_old_database_at_once_migrate_it_once(postgres_url: str) -> None:
    make_v1_database(postgres_url)
    opened: list[HistoryStore] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        try:
            opened.append(HistoryStore(postgres_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def waiting() -> int:
        with psycopg.connect(postgres_url, autocommit=True) as c:
            row = c.execute(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchone()
            return int(row[0]) if row else 0

    # hold the migration lock while three observers open the database: all three
    # queue behind it, then one migrates and the others find the work done
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (pg.MIGRATION_LOCK,))
        threads = [threading.Thread(target=open_it) for _ in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: waiting() == 3, timeout=30, what="three observers waiting for the migration lock")
        holder.execute("SELECT pg_advisory_unlock(%s)", (pg.MIGRATION_LOCK,))
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(opened) == 3
        assert all(s.stats()["healthy"] for s in opened)
        s = opened[0]
        assert s.db.execute("SELECT version FROM schema_version") == [{"version": SCHEMA_VERSION}]
        assert "crash_reports" not in table_names(s.db)
        rows = {c["pid"]: c for c in opened[2].crashes(limit=100)}
        assert set(rows) == {P(3), P(7), P(9)}  # the crash in both old tables once
        assert rows[P(3)]["has_report"] and rows[P(3)]["traceback"] == "tb one" and rows[P(3)]["child_id"] == "b"
        assert rows[P(7)]["has_report"] and not rows[P(9)]["has_report"]
        groups = {g["signature"]: g["count"] for g in opened[1].crash_groups(node="n")}
        assert groups == {"ZeroDivisionError at app.py:ratio": 1, "exit 'killed' of Gamma": 1, "KeyError at ?": 1}
        assert [a["action"] for a in s.audits()] == ["kill"]
    finally:
        for s in opened:
            s.close()


def test_observers_attached_to_one_node_record_its_history_once_and_hand_it_over(postgres_url: str) -> None:
    def open_store() -> HistoryStore:
        db = Database(open_backend(postgres_url), batch_interval=0.02, claim_interval=0.05)
        return HistoryStore("shared", db=db)

    first, second = open_store(), open_store()
    stores = [first, second]
    heard: list[list[str]] = [[], []]
    for store, kinds in zip(stores, heard, strict=True):
        store.on_commit(lambda kind, row, kinds=kinds: kinds.append(f"{kind} {row.get('pid')}"))
    try:
        msgs = [*snapshot([sup(P(1), name="top")], seq=1), ev("spawn", 2, pid=P(2), supervisor=P(1), label="w")]
        msgs.append(ev("exit", 3, pid=P(2), reason="boom", reason_kind="exception", exception="ValueError"))
        for store in stores:  # both attached to node n: both hear every message (the first one first)
            for m in msgs:
                store.record("n", m)
            assert store.flush()
        assert first.db.execute("SELECT COUNT(*) AS n FROM events WHERE kind = 'spawn'") == [{"n": 1}]
        assert [g["count"] for g in second.crash_groups(node="n")] == [1]  # one crash, counted once
        assert heard == [[f"crash {P(2)}"], [f"crash {P(2)}"]]  # each server's live pushes hear it once
        assert len(first.db.execute("SELECT id FROM checkpoints")) == 1
        first.close()  # its connection closes: the claim passes to the second
        seq = 3

        def spawned_by_the_second() -> bool:
            nonlocal seq
            seq += 1
            second.record("n", ev("spawn", seq, pid=P(seq), supervisor=P(1), label="w"))
            assert second.flush()
            return bool(second.events(node="n", kinds=["spawn"], pid=P(seq)))

        wait_for(spawned_by_the_second, timeout=30, what="the second observer to take the node's history over")
        assert len(second.db.execute("SELECT id FROM checkpoints")) == 2  # it took over with a checkpoint
        tree = second.tree_at("n", time.time() + 10)
        assert tree is not None  # what the second heard before taking over is in its checkpoint
        assert {r["pid"] for r in tree["procs"]} == {P(1), *(P(i) for i in range(4, seq + 1))}
    finally:
        for s in stores:
            s.close()


def test_connections_dropped_by_the_server_are_replaced_without_failing_a_read_or_an_audit(
    postgres_url: str,
) -> None:
    """A restart, a fail-over or a proxy's idle timeout ends the observer's sessions:
    the next read and the next audited action open new ones instead of failing."""
    s = HistoryStore(postgres_url, batch_interval=0.02)
    try:
        for m in [*snapshot([sup(P(1), name="top")], seq=1), ev("spawn", 2, pid=P(2), supervisor=P(1))]:
            s.record("n", m)
        assert s.flush() and len(s.events(node="n")) == 2  # a pooled read connection
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'observer'"
            ).fetchone()
        assert ended is not None and ended[0] >= 2  # the writer's and the reader's
        assert len(s.events(node="n")) == 2
        aid = s.audit("ada", "1.2.3.4", "kill", P(2), node="n")
        s.record("n", ev("spawn", 3, pid=P(3), supervisor=P(1)))
        assert s.flush()
        assert [a["id"] for a in s.audits()] == [aid] and len(s.events(node="n")) == 3
    finally:
        s.close()


def test_a_database_written_by_a_newer_observer_is_refused(postgres_url: str) -> None:
    HistoryStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=r"written by a newer observer \(schema \d+ > \d+"):
        Database(open_backend(postgres_url))


def test_an_unreachable_server_is_retried_and_refuses_audited_actions() -> None:
    """Nothing listens there: the observer runs on, and refuses what must be written first."""
    url = f"postgresql://observer@127.0.0.1:{free_port()}/nobody"
    s = HistoryStore(url, retry_interval=0.05)
    try:
        assert not s.stats()["healthy"] and "127.0.0.1" in str(s.stats()["error"])
        with pytest.raises(StoreError, match="audit log unavailable"):
            s.audit("ada", "1.2.3.4", "kill", P(1), node="n")
        with pytest.raises(StoreError):
            ChaosHistory(s.db).save({"id": "e", "node": "n", "started": 1.0, "status": "running"})
    finally:
        s.close()


def test_the_db_option_takes_a_postgresql_url_without_its_password(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["serve", "--db", "postgresql://u:sesame@127.0.0.1/db", "--attach", "127.0.0.1:1"])
    assert r.exit_code == 2 and "PGPASSWORD" in r.output and "sesame" not in r.output
    r = runner.invoke(main, ["demo", "--db", "postgresql://u@h/db?no_such_option=1"])
    assert r.exit_code == 2 and "not a PostgreSQL connection URL" in r.output
    r = runner.invoke(main, ["demo", "--db", str(tmp_path)])
    assert r.exit_code == 2 and "directory" in r.output


# -- two real observer servers on one database ---------------------------------------------------


class Server:
    """``observer serve`` attached to ``nodes`` with its history in PostgreSQL."""

    def __init__(self, tmp: Path, nodes: dict[str, NodeProcess], db: str) -> None:
        tmp.mkdir()
        tokens = tmp / "agent.token"
        tokens.write_text(TOKEN)
        self.nodes = set(nodes)
        attach = [a for name, n in nodes.items() for a in ("--attach", f"{name}={n.address}")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer", "serve", *attach, "--node-token-file", str(tokens), "--db", db,
             "--allow-destructive-actions", "--port", "0", "--no-browser"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=clean_env(OBSERVER_LOGIN_TOKEN=LOGIN),
        )  # fmt: skip
        assert self.proc.stdout is not None
        m, out = read_line(self.proc.stdout, re.compile(r"open (http://127\.0\.0\.1:\d+)/login"), 60, "the URL")
        self.output = [out]
        self._drain = threading.Thread(target=self._read, daemon=True)  # a full pipe would stall the server
        self._drain.start()
        self.base = m.group(1)
        self.http = requests.Session()
        self.csrf = login(self.http, self.base, LOGIN)
        wait_for(self.attached, timeout=60, what="both nodes attached")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace"))

    def attached(self) -> bool:
        nodes = self.http.get(f"{self.base}/api/cluster").json()["nodes"]
        return {n["name"] for n in nodes if n["status"] == "up"} == self.nodes

    def get(self, path: str) -> Any:
        r = self.http.get(f"{self.base}{path}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def kill(self, node: str, proc_name: str) -> str:
        """Kill the process registered as ``proc_name`` on ``node`` (audited); its pid."""
        hits = self.get(f"/api/nodes/{node}/search?q={proc_name}")["matches"]
        pid = str(next(h["pid"] for h in hits if h["name"] == proc_name))
        r = self.http.post(
            f"{self.base}/api/nodes/{node}/processes/{pid}/kill",
            json={"reason": "kill"},
            headers={"X-CSRF-Token": self.csrf, "Origin": self.base},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        return pid

    def close(self) -> None:
        stop_process(self.proc)
        self._drain.join(10)


def test_two_observer_servers_on_one_database_see_each_other_s_audit_rows_and_crashes(
    tmp_path: Path, postgres_url: str
) -> None:
    """Both servers attached to both nodes (as behind a shared message queue): each
    sees what the other did, and each node's history is written once, not twice."""
    nodes = {"alpha": NodeProcess(seed=1), "beta": NodeProcess(seed=2)}
    servers: list[Server] = []
    try:
        a = Server(tmp_path / "a", nodes, postgres_url)
        servers.append(a)
        b = Server(tmp_path / "b", nodes, postgres_url)
        servers.append(b)
        killed = {"alpha": a.kill("alpha", PAYMENTS), "beta": b.kill("beta", PAYMENTS)}
        for here, node in ((a, "beta"), (b, "alpha")):  # each sees the other server's action and crash

            def audited(s: Server = here, node: str = node) -> list[dict[str, Any]]:
                return [
                    r
                    for r in s.get(f"/api/audit?node={node}")["audit"]
                    if r["action"] == "kill" and r["target"] == killed[node] and r["ok"] == 1
                ]

            [row] = wait_for(audited, timeout=30, what=f"the kill on {node} in the other server's audit log")
            assert row["who"] and row["result"]

            def crashed(s: Server = here, node: str = node) -> list[dict[str, Any]]:
                return [c for c in s.get(f"/api/events?node={node}")["crashes"] if c["pid"] == killed[node]]

            [crash] = wait_for(crashed, timeout=30, what=f"the crash on {node} in the other server's history")
            one = here.get(f"/api/crashes/{crash['id']}")
            assert one["node"] == node and one["group"]["count"] == 1  # recorded once, by one of the two
            assert [e["pid"] for e in here.get(f"/api/events?node={node}&kinds=exit&pid={killed[node]}")["events"]] == [
                killed[node]
            ]
        # one history: both servers list the same audit log and crash groups
        assert {r["id"] for r in a.get("/api/audit")["audit"]} == {r["id"] for r in b.get("/api/audit")["audit"]}
        assert a.get("/api/crashes")["groups"] == b.get("/api/crashes")["groups"]
    finally:
        for s in servers:
            s.close()
        for n in nodes.values():
            n.stop()

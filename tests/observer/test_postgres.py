"""Shared history on PostgreSQL (observer/db/postgresql.py), on a real server.

A cluster of the test's own (tests/observer/pg.py: initdb and pg_ctl on a free
loopback port). The same scenario runs on SQLite and on PostgreSQL and must
read back the same; two databases opening one empty PostgreSQL database at
once both find the schema done; and two real ``observer serve`` processes on
one PostgreSQL database see each other's audit rows and crash history.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from examples.demo_system import PAYMENTS
from observer.db import MIGRATIONS, Database, PostgresBackend
from observer.db import chaos as chaos_db
from observer.db import traces as traces_db
from observer.store import HistoryStore
from tests.observer import TOKEN, ev, rec, snapshot, wait_for
from tests.observer.nodes import NodeProcess, clean_env, free_port, login, read_line, stop_process
from tests.observer.pg import PostgresCluster

WALL_CLOCK = {"recv_time", "done_time", "first_seen", "last_seen", "checkpoint_time", "path"}
"""Columns written from the observer's own clock (they differ between two runs)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    c = PostgresCluster()
    try:
        yield c
    finally:
        c.stop()


_DBS = iter(range(1, 1_000_000))


def _new_db(cluster: PostgresCluster) -> str:
    return cluster.create_database(f"h{next(_DBS)}")


def _scenario(store: HistoryStore) -> dict[str, Any]:
    """Events, crashes (with and without a report), audit rows, checkpoints; then every query."""
    procs = [rec("<0.1.0>", name="sup", kind="supervisor"), rec("<0.2.0>", name="w", supervisor="<0.1.0>", child_id=7)]
    for m in snapshot(procs, names={"sup": "<0.1.0>", "w": "<0.2.0>"}):
        store.record("n1", m)
    report = {"exception": "ValueError('100% bad?')", "reason": "error", "pid": "<0.2.0>", "time": 2001.0,
              "exceptions": [{"frames": [{"own": True, "file": "w.py", "function": "handle"}]}]}  # fmt: skip
    store.record("n1", ev("exit", 1, pid="<0.2.0>", reason="error", reason_kind="exception",
                          exception="ValueError('100% bad?')", report=report))  # fmt: skip
    store.record("n1", ev("restart", 2, pid="<0.3.0>", old_pid="<0.2.0>", supervisor="<0.1.0>", child_id=7))
    store.record("n1", ev("spawn", 3, pid="<0.3.0>", name="w", supervisor="<0.1.0>", child_id=7))
    store.record("n1", ev("exit", 4, pid="<0.3.0>", reason="killed", reason_kind="killed"))
    store.record("n2", ev("exit", 1, pid="<0.9.0>", reason="error", reason_kind="exception", exception="KeyError('k')"))
    a = store.audit("alice/1", "127.0.0.1", "kill", "<0.3.0>", {"pid": "<0.3.0>", "reason": "kill"}, node="n1")
    store.audit_result(a, {"pid": "<0.3.0>"}, ok=True)
    b = store.audit("bob/2", "127.0.0.1", "send", "<0.3.0>", {"to": "<0.3.0>", "message": "50%"}, node="n1")
    store.audit_result(b, {"error": "not_permitted"}, ok=False)
    for i, held in enumerate((True, None)):  # the chaos journal shares the database
        chaos_db.save(store.db, {"id": f"exp-{i}", "node": "n1", "title": "50% of workers", "started": 3000.0 + i,
                                 "ended": None, "status": "done", "hypothesis_held": held,
                                 "summary": {"carried_out": 2}})  # fmt: skip
    traces_db.begin(store.db, "tr-1", "n1", 3100.0, "alice/1", {"pids": ["<0.3.0>"], "limit": 100})
    traces_db.begin(store.db, "tr-1", "n1", 3101.0, "alice/1", {"pids": ["<0.3.0>"], "limit": 50})  # again: afresh
    traces_db.add_messages(store.db, "tr-1", [{"n": 1, "time": 3101.5, "from": "<0.1.0>", "msg": "50% done?"}])
    traces_db.end(store.db, "tr-1", count=1, dropped=0, stored=1, ended=3102.0, reason="limit")
    assert store.flush()
    groups = store.crash_groups()
    out: dict[str, Any] = {
        "nodes": store.nodes(),
        "events": store.events(),
        "events_window": store.events(node="n1", since=2001.5, until=2003.5, kinds=["spawn", "restart"]),
        "events_q": store.events(q="100%"),
        "crashes": store.crashes(),
        "crashes_q": store.crashes(q="bad?"),
        "groups": groups,
        "crash": [store.crash(g["latest"]["id"]) for g in groups],
        "process_crashes": store.process_crashes("n1", "<0.3.0>", "<0.1.0>", "7"),
        "find": store.find_crash("n1", "<0.2.0>"),
        "audits": [a | {"time": None} for a in store.audits()],  # written at the observer's clock
        "audits_n1": [a | {"time": None} for a in store.audits(node="n1", limit=1)],
        "tree_at": store.tree_at("n1", 4e9),  # checkpoints are taken at the observer's clock: any time after
        "timeline": _totals(store.timeline("n1", buckets=4)),
        "chaos": chaos_db.list_experiments(store.db),
        "chaos_one": chaos_db.get(store.db, "exp-0"),
        "traces": traces_db.list_traces(store.db),
        "trace": traces_db.get(store.db, "tr-1"),
    }
    return _strip(out)


def _totals(timeline: dict[str, Any]) -> dict[str, int]:
    """The timeline's counts added up (its buckets span the snapshot's wall-clock time too)."""
    out: dict[str, int] = {}
    for b in timeline["buckets"]:
        for k, v in b.items():
            if k != "t":
                out[k] = out.get(k, 0) + v
    return out


def _strip(v: Any) -> Any:
    if isinstance(v, dict):
        clock = WALL_CLOCK | ({"time"} if v.get("kind") == "snapshot" else set())  # stamped on arrival
        return {k: _strip(x) for k, x in v.items() if k not in clock}
    if isinstance(v, list):
        return [_strip(x) for x in v]
    return v


def test_the_same_history_reads_back_the_same_on_sqlite_and_postgresql(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    results = {}
    for name, where in (("sqlite", str(tmp_path / "h.sqlite3")), ("postgresql", _new_db(cluster))):
        store = HistoryStore(where, batch_interval=0.01, checkpoint_events=3)
        try:
            results[name] = _scenario(store)
        finally:
            store.close()
    pg, lite = results["postgresql"], results["sqlite"]
    assert (
        lite["groups"]
        and lite["audits"]
        and lite["tree_at"]
        and lite["events_window"]
        and lite["chaos"]
        and lite["trace"]
    )
    for key in lite:
        assert pg[key] == lite[key], key


def test_the_migrations_are_sqlites_and_two_servers_opening_an_empty_database_both_succeed(
    cluster: PostgresCluster,
) -> None:
    dsn = _new_db(cluster)
    backend = PostgresBackend(dsn)
    assert [(m.number, m.name) for m in backend.migrations()] == [(m.number, m.name) for m in MIGRATIONS]
    assert "password" not in backend.describe() and cluster.password not in backend.describe()
    dbs: list[Database] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            dbs.append(Database(PostgresBackend(dsn)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(dbs) == 3
        assert all(d.stats()["healthy"] for d in dbs)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(MIGRATIONS[-1].number,)]
            sql = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'"
            cols = {r[0]: r[1] for r in conn.execute(sql)}
        assert cols["time"] == "double precision" and cols["id"] == "bigint" and cols["json"] == "text"
    finally:
        for d in dbs:
            d.close()


class Server:
    """``observer serve`` attached to one node, its history in a shared PostgreSQL database."""

    def __init__(self, tmp: Path, name: str, node: NodeProcess, dsn_no_password: str, password: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "observer", "serve", "--attach", f"{name}={node.address}",
             "--node-token-file", str(tmp / "node_token"), "--login-token-file", str(tmp / "login"),
             "--allow-destructive-actions", "--port", str(self.port), "--no-browser", "--db", dsn_no_password],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=clean_env(PGPASSWORD=password),  # the password never on the command line
        )  # fmt: skip
        assert self.proc.stdout is not None
        read_line(self.proc.stdout, re.compile(r"open http://127\.0\.0\.1:\d+/login"), 60, f"{name}'s URL")
        self.http = requests.Session()
        self.csrf = login(self.http, self.base, (tmp / "login").read_text().split()[0])

    def get(self, path: str) -> Any:
        r = self.http.get(self.base + path, timeout=10)
        r.raise_for_status()
        return r.json()

    def stop(self) -> None:
        stop_process(self.proc)


def test_two_observer_servers_on_one_postgresql_see_each_others_audit_rows_and_crashes(
    cluster: PostgresCluster, tmp_path: Path
) -> None:
    dsn = _new_db(cluster)
    no_password = dsn.replace(f":{cluster.password}@", "@")
    (tmp_path / "node_token").write_text(TOKEN)
    (tmp_path / "login").write_text("shared-login-token-0123456789abcdef role=operator name=ops\n")
    nodes = [NodeProcess(traffic=False, seed=5), NodeProcess(traffic=False, seed=6)]
    servers: list[Server] = []
    try:
        servers = [Server(tmp_path, f"node-{i}", n, no_password, cluster.password) for i, n in enumerate(nodes, 1)]
        a, b = servers
        for s, name in ((a, "node-1"), (b, "node-2")):
            wait_for(lambda s=s, name=name: s.get(f"/api/nodes/{name}/processes?limit=1")["total"] > 10,
                     timeout=60, what=f"{name} attached")  # fmt: skip

        # server A kills a process on its node: B sees the audit row and the crash
        r = a.http.post(f"{a.base}/api/nodes/node-1/processes/{PAYMENTS}/kill", json={"reason": "kill"},
                        headers={"X-CSRF-Token": a.csrf}, timeout=20)  # fmt: skip
        assert r.status_code == 200, r.text
        killed = r.json()["result"]["pid"]

        def b_sees_the_audit() -> list[dict[str, Any]]:
            rows = b.get("/api/audit")["audit"]
            return [x for x in rows if x["node"] == "node-1" and x["action"] == "kill" and x["ok"]]

        (row,) = wait_for(b_sees_the_audit, timeout=30, what="A's audit row on B")
        assert row["target"] == killed and row["who"].startswith("ops/")

        def b_sees_the_crash() -> list[dict[str, Any]]:
            return [g for g in b.get("/api/crashes")["groups"] if g["node"] == "node-1"]

        (group,) = wait_for(b_sees_the_crash, timeout=30, what="A's crash on B")
        assert group["count"] == 1 and group["latest"]["pid"] == killed
        detail = b.get(f"/api/crashes/{group['latest']['id']}")
        assert detail["pid"] == killed and detail["node"] == "node-1"

        # and the other way round: B acts, A sees it
        r = b.http.post(f"{b.base}/api/nodes/node-2/processes/{PAYMENTS}/kill", json={"reason": "kill"},
                        headers={"X-CSRF-Token": b.csrf}, timeout=20)  # fmt: skip
        assert r.status_code == 200, r.text
        wait_for(lambda: any(x["node"] == "node-2" for x in a.get("/api/audit")["audit"]), timeout=30,
                 what="B's audit row on A")  # fmt: skip
        wait_for(lambda: {g["node"] for g in a.get("/api/crashes")["groups"]} == {"node-1", "node-2"}, timeout=30,
                 what="both nodes' crashes on A")  # fmt: skip
    finally:
        for s in servers:
            s.stop()
        for n in nodes:
            n.stop()

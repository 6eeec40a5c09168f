"""A throwaway PostgreSQL cluster for the tests: Debian's ``postgresql`` package
(``make postgresql`` installs it), ``initdb`` into a temporary directory, a
server on a free loopback port with its unix socket in that directory, stopped
and removed at the end. As root, the server runs as the ``postgres`` user
(PostgreSQL refuses to run as root).

Under ``CI=true`` a missing PostgreSQL (or psycopg) fails loudly instead of skipping.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresCluster", "bin_dir", "running_cluster", "table_names", "unavailable"]


def unavailable(why: str) -> None:
    """Skip, or fail under ``CI=true`` (where PostgreSQL must be there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the PostgreSQL tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(why)


def bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: Debian keeps them under
    ``/usr/lib/postgresql/<version>/bin`` (the newest wins), else on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL server of our own (``start`` / ``stop``); ``url(db)`` to reach it."""

    user = "observer"
    """The cluster's superuser (trust authentication: loopback and our socket only)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="observer-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._run_as: list[str] = []
        self._databases = 0
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                raise RuntimeError("running as root and there is no postgres user to run the server as") from None
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]

    def _pg(self, tool: str, *args: str, timeout: float = 120.0) -> None:
        cmd = [*self._run_as, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}{log}")

    def start(self) -> None:
        self._pg(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"
        )
        for attempt in range(5):  # another process may take the port between our look and the bind
            self.port = _free_port()
            opts = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off"
            try:
                self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", opts, "start")
                return
            except RuntimeError:
                if attempt == 4:
                    raise

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._databases += 1
        name = f"t{os.getpid()}_{self._databases}_{time.monotonic_ns() % 1_000_000}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """A started cluster (skipped, or failed under CI, when PostgreSQL or psycopg is missing)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[postgresql]'")
    bindir = bin_dir()
    if bindir is None:
        unavailable("PostgreSQL is not installed (make postgresql installs Debian's package as root)")
        raise AssertionError("unreachable")
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()  # installed but failing to start: an error, not a skip
        yield cluster
    finally:
        cluster.stop()


def table_names(db: Any) -> set[str]:
    """The tables of an open :class:`observer.db.Database`, on either backend."""
    if db.backend.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        sql = "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = current_schema()"
    return {r["name"] for r in db.execute(sql)}

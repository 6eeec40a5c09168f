"""A real PostgreSQL server of the test's own: a fresh cluster (``initdb``) in a
temporary directory, started with ``pg_ctl`` on a free loopback port and
stopped (and removed) afterwards.

Debian's ``postgresql`` package provides the binaries (``make postgresql``
installs it); they live in ``/usr/lib/postgresql/<version>/bin``. PostgreSQL
refuses to run as root: as root the cluster belongs to the ``postgres`` user
(``runuser``), otherwise to the user running the tests. Without the package
the tests that need it are skipped on a developer's machine and fail in CI
(``CI=true``).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

__all__ = ["PostgresCluster", "pg_bindir"]


def pg_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are (the newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresCluster:
    """One cluster; :attr:`dsn` reaches its ``postgres`` database as the superuser."""

    def __init__(self) -> None:
        bindir = pg_bindir()
        if bindir is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("PostgreSQL is not installed (make postgresql)", pytrace=False)
            pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
        self.bindir = bindir
        self.port = _free_port()
        self.password = secrets.token_hex(16)
        self.dir = Path(tempfile.mkdtemp(prefix="observer-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL does not run as root
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if self._as:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=scram-sha-256",
            f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()
        opts = f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "-t", "60", "start")
        self.dsn = f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        res = subprocess.run(
            [*self._as, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120, check=False
        )
        if res.returncode != 0:
            log = self.dir / "log"
            extra = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {res.stdout[-2000:]}{res.stderr[-2000:]}{extra}")

    def create_database(self, name: str) -> str:
        """A new empty database; returns its DSN."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

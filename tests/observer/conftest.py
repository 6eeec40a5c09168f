"""Fixtures shared by the observer's tests: the history database on both backends.

``history_where`` is parametrized over ``sqlite`` (a file in the test's tmp
dir) and ``postgresql`` (a fresh database on the session's own PostgreSQL
cluster, see :mod:`tests.pgcluster`): a test that takes it runs on both, so the
SQLite path and the PostgreSQL path pass the same tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgcluster import PostgresCluster, running_cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's own PostgreSQL server (skipped when PostgreSQL is missing; failed under CI=true)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return postgres_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A ``--db`` value: an SQLite file, or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "history.db")
    return str(request.getfixturevalue("postgres_url"))

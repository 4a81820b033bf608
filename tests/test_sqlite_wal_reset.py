"""Which SQLite releases have the WAL-reset bug, and what a process writing the audit trail warns at start.

The ranges are SQLite's own (https://www.sqlite.org/wal.html#walresetbug): 3.7.0 to 3.51.2, fixed in 3.51.3
and backported to 3.50.7 and 3.44.6. The warning is only for a WAL-mode file written outside the writers'
turns (model_store.sqlite_turns); that the real gunicorn and the real runner, on the default, do not log it
is checked in ``test_e2e_gunicorn.py`` and ``test_jobs_fault.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from model_store.db import has_wal_reset_bug, make_engine, sqlite_warning


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ((3, 6, 23), False),  # before WAL
        ((3, 7, 0), True),
        ((3, 40, 1), True),  # Debian 12
        ((3, 44, 5), True),
        ((3, 44, 6), False),  # backport
        ((3, 44, 9), False),
        ((3, 45, 0), True),
        ((3, 50, 6), True),
        ((3, 50, 7), False),  # backport
        ((3, 51, 2), True),
        ((3, 51, 3), False),  # the fix
        ((3, 52, 0), False),
        ((4, 0, 0), False),
    ],
)
def test_releases_with_the_bug(version: tuple[int, int, int], affected: bool) -> None:
    assert has_wal_reset_bug(version) is affected


@pytest.fixture
def outside_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A WAL-mode SQLite file written by an engine not made by make_engine (its connections take no turn)."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'candor.db'}")
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    yield engine
    engine.dispose()


def test_the_warning_names_the_release_and_the_way_out(outside_engine: sa.Engine) -> None:
    message = sqlite_warning(outside_engine, (3, 40, 1))
    assert message is not None
    assert "SQLite 3.40.1 has the WAL-reset bug" in message
    assert "PostgreSQL (CANDOR_DATABASE_URL)" in message and "3.51.3" in message
    assert "make_engine" in message


@pytest.mark.parametrize("version", [(3, 51, 3), (3, 50, 7)])
def test_no_warning_where_the_bug_cannot_bite(
    outside_engine: sa.Engine, version: tuple[int, int, int]
) -> None:
    assert sqlite_warning(outside_engine, version) is None


def test_no_warning_for_postgresql_or_the_default(tmp_path: Path) -> None:
    postgres = sa.create_engine("postgresql+psycopg://candor@127.0.0.1/candor")  # never connects
    default = make_engine(f"sqlite:///{tmp_path / 'candor.db'}")
    try:
        assert sqlite_warning(postgres, (3, 40, 1)) is None
        assert sqlite_warning(default, (3, 40, 1)) is None
    finally:
        default.dispose()

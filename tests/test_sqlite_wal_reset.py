"""Which SQLite releases have the WAL-reset bug, and what a process writing the audit trail warns at start.

The ranges are SQLite's own (https://www.sqlite.org/wal.html#walresetbug): 3.7.0 to 3.51.2, fixed in 3.51.3
and backported to 3.50.7 and 3.44.6. That the real gunicorn and the real runner log the warning is checked in
``test_e2e_gunicorn.py`` and ``test_jobs_fault.py``."""

from __future__ import annotations

import pytest

from model_store.db import has_wal_reset_bug, sqlite_warning


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


def test_the_warning_names_the_release_and_the_way_out() -> None:
    message = sqlite_warning("sqlite:////tmp/candor.db", (3, 40, 1))
    assert message is not None
    assert "SQLite 3.40.1 has the WAL-reset bug" in message
    assert "PostgreSQL (CANDOR_DATABASE_URL)" in message and "3.51.3" in message


@pytest.mark.parametrize(
    ("url", "version"),
    [
        ("postgresql+psycopg://candor@127.0.0.1/candor", (3, 40, 1)),  # SQLite is not in use
        ("sqlite:////tmp/candor.db", (3, 51, 3)),
        ("sqlite:////tmp/candor.db", (3, 50, 7)),
    ],
)
def test_no_warning_where_the_bug_cannot_bite(url: str, version: tuple[int, int, int]) -> None:
    assert sqlite_warning(url, version) is None

"""Engine and session factory for the store (SQLite by default, PostgreSQL by URL)."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from model_store.sqlite_turns import end_turns_with_transactions


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for several threads and processes."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


SQLITE_PAGE_SIZE = 16384
"""Audit records are a few kB each (a SHAP row's is ~6 kB): on 4 kB pages each spills into overflow pages, on
16 kB pages it is stored inline, which halves the cost of writing them. Takes effect when the file is created
(before WAL is switched on); an existing database keeps its page size."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    factory = sessionmaker(engine, expire_on_commit=False)
    end_turns_with_transactions(factory)
    return factory


def has_wal_reset_bug(version: tuple[int, int, int]) -> bool:
    """Whether a SQLite of ``version`` has the WAL-reset bug (https://www.sqlite.org/wal.html#walresetbug):
    3.7.0 to 3.51.2, except the releases the fix was backported to (3.50.7 and later 3.50, 3.44.6 and later
    3.44)."""
    if not (3, 7, 0) <= version < (3, 51, 3):
        return False
    return not ((3, 50, 7) <= version < (3, 51, 0) or (3, 44, 6) <= version < (3, 45, 0))


def sqlite_warning(url: str, version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> str | None:
    """What a process writing the audit trail should log at start when ``url`` is a SQLite database and the
    linked SQLite has the WAL-reset bug: with several processes writing (gunicorn's workers, the job runner
    and its Dask workers), checkpoints from different processes can race and corrupt the database."""
    if not url.startswith("sqlite") or not has_wal_reset_bug(version):
        return None
    return (
        f"SQLite {'.'.join(map(str, version))} has the WAL-reset bug "
        "(https://www.sqlite.org/wal.html#walresetbug): when several processes write the audit trail "
        "(gunicorn's workers, the job runner), use PostgreSQL (CANDOR_DATABASE_URL) or a SQLite with the "
        "fix: 3.51.3 or later, 3.50.7 or a later 3.50, 3.44.6 or a later 3.44."
    )


def warn_of_sqlite(url: str, log: logging.Logger) -> None:
    """Log ``sqlite_warning`` at start of a process that writes the audit trail, when there is one."""
    warning = sqlite_warning(url)
    if warning:
        log.warning(warning)

"""Engine and session factory for the store (SQLite by default, PostgreSQL by URL).

SQLite runs in WAL mode, with every write and checkpoint inside the writers' turn (model_store.sqlite_turns).
SQLite 3.7.0-3.51.2 (this machine's 3.40.1 among them) has the WAL-reset bug
(https://www.sqlite.org/wal.html#walresetbug): when one connection runs a checkpoint while another commits
the transaction that resets the write-ahead log, a data race can leave a wrong field in the WAL-index header,
and a later checkpoint then skips part of a transaction. The race needs the checkpoint and the resetting
commit to overlap. Here a checkpoint runs only inside a commit (the automatic one) or at the last close, and a
commit only in a connection holding the turn, so no checkpoint overlaps another connection's commit, and
several processes (gunicorn's workers, the job runner, its Dask workers) can share the file. A rollback
journal (DELETE or TRUNCATE) would avoid the bug too, but there every commit shuts readers out of the file,
and under concurrent writes readers starve. A file written by anything that does not take the turn (another
program, an engine not made here) is still exposed: ``sqlite_warning`` says so for such an engine.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from model_store.sqlite_turns import TurnConnection, end_turns_with_transactions


def make_engine(url: str) -> Engine:
    """An engine with the settings each backend needs for several threads and processes."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30, "factory": TurnConnection}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


SQLITE_PAGE_SIZE = 16384
"""Audit records are a few kB each (a SHAP row's is ~6 kB): on 4 kB pages each spills into overflow pages, on
16 kB pages it is stored inline, which halves the cost of writing them. Takes effect when the file is created
(before WAL is switched on); an existing database keeps its page size."""


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """Settings of each new connection, outside the writers' turn (a connection opens even while another
    writes): all but the journal mode are the connection's own, and switching a file to WAL takes an exclusive
    lock and has no log yet to checkpoint."""
    cursor = sqlite3.Cursor(dbapi_connection)
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")  # the commit's fsync comes after the turn: see TurnConnection
    cursor.close()


def insert_missing(session: Session, row_class: Any, rows: list[dict[str, Any]]) -> None:
    """Insert content-addressed ``rows`` (keyed by ``sha256``) in the caller's transaction, keeping a row
    already stored under the same key as it is: the same digest names the same bytes."""
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(row_class).on_conflict_do_nothing(index_elements=["sha256"]), rows)


def insert_many(session: Session, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (values in the order of ``columns``) in one ``executemany`` of the driver, in the
    caller's transaction, without the per-row work of SQLAlchemy's generic path (several microseconds a
    row): for the audit log's bulk writes. Each value must be one the driver takes as it is (int, str,
    bytes, None); give any other through ``bound``."""
    if not rows:
        return
    dialect = session.connection().dialect
    mark = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    if mark is None:
        raise ValueError(f"insert_many does not write the {dialect.paramstyle} parameter style")
    unknown = set(columns) - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column {sorted(unknown)}")
    preparer = dialect.identifier_preparer
    quoted = ", ".join(preparer.quote(name) for name in columns)
    marks = ", ".join([mark] * len(columns))
    statement = f"INSERT INTO {preparer.format_table(table)} ({quoted}) VALUES ({marks})"  # noqa: S608
    session.connection().exec_driver_sql(statement, rows)


def bound(session: Session, column: Column[Any], value: Any) -> Any:
    """``value`` as SQLAlchemy would hand it to the driver for ``column`` (for SQLite, a datetime as
    text)."""
    dialect = session.connection().dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


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


def sqlite_warning(engine: Engine, version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> str | None:
    """What a process writing the audit trail should log at start when ``engine``'s database is still exposed
    to the WAL-reset bug: a SQLite file in WAL mode, a linked SQLite with the bug, and connections that do not
    take the writers' turn (an engine not made by ``make_engine``). None for the default."""
    if engine.dialect.name != "sqlite" or not has_wal_reset_bug(version):
        return None
    with engine.connect() as connection:
        dbapi_connection = connection.connection.dbapi_connection
        if isinstance(dbapi_connection, TurnConnection) or not engine.url.database:
            return None
        if str(connection.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() != "wal":
            return None
    return (
        f"SQLite {'.'.join(map(str, version))} has the WAL-reset bug "
        "(https://www.sqlite.org/wal.html#walresetbug) and this engine's connections write its WAL-mode file "
        "without taking the writers' turn: make it with model_store.db.make_engine, use PostgreSQL "
        "(CANDOR_DATABASE_URL), or a SQLite with the fix: 3.51.3 or later, 3.50.7 or a later 3.50, 3.44.6 or "
        "a later 3.44."
    )


def warn_of_sqlite(engine: Engine, log: logging.Logger) -> None:
    """Log ``sqlite_warning`` at start of a process that writes the audit trail, when there is one."""
    warning = sqlite_warning(engine)
    if warning:
        log.warning(warning)

"""The embedded default is safe from SQLite's WAL-reset bug (model_store.db, model_store.sqlite_turns).

Several OS processes write one SQLite file through the Store while checkpoints run (automatic ones on a low
threshold and explicit ones), and afterwards ``PRAGMA integrity_check`` is ``ok`` and every row each process
says it committed is there. The mechanism is checked in force: a fresh connection reads back WAL mode, every
Store connection takes the writers' turn, a write and a checkpoint in another process wait while the turn is
held, the automatic checkpoint runs inside the committing call (so inside its turn), which statements take the
turn, and the start-up warning stays silent for the default but not for an engine outside the scheme."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from model_store.db import sqlite_warning
from model_store.sqlite_turns import SUFFIX, TurnConnection, reads_only
from model_store.store import Store

WRITERS = 4
COMMITS = 150
PAYLOAD = 2000
SCRATCH = "CREATE TABLE scratch (id INTEGER PRIMARY KEY, proc INTEGER NOT NULL, payload BLOB NOT NULL)"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'candor.db'}"


@contextmanager
def turn_held(database: Path) -> Iterator[None]:
    """The writers' turn, held by another open file description (as another process would hold it)."""
    fd = os.open(str(database) + SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_rows(data_dir: str, url: str, proc: int, results: Any) -> None:
    """One writer process: COMMITS transactions through the Store (a 2 kB row each, an API key every tenth),
    automatic checkpoints every 4 pages and an explicit one every 20 commits; reports what it committed."""
    store = Store(Path(data_dir), url, migrate=False)
    sa.event.listen(store.engine, "connect", _checkpoint_often)
    committed = keys = checkpoints = 0
    payload = os.urandom(PAYLOAD)
    for i in range(COMMITS):
        with store.sessions.begin() as session:
            session.execute(
                sa.text("INSERT INTO scratch (proc, payload) VALUES (:p, :b)"), {"p": proc, "b": payload}
            )
        committed += 1
        if i % 10 == 0:
            store.keys.create(f"writer-{proc}-{i}", ["explain"])
            keys += 1
        if i % 20 == 0:
            mode = "RESTART" if i % 40 == 0 else "PASSIVE"
            with store.engine.connect() as connection:
                busy, _log, done = connection.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})").one()
                connection.commit()
            checkpoints += int(busy == 0 and done > 0)
    store.close()
    results.put((proc, committed, keys, checkpoints))


def _checkpoint_often(dbapi_connection: Any, _record: Any) -> None:
    sqlite3.Cursor(dbapi_connection).execute("PRAGMA wal_autocheckpoint=4")


def read_rows(url: str, stop: Any) -> None:
    """A reader process holding snapshots while the writers commit and checkpoint."""
    engine = sa.create_engine(url)
    while not stop.is_set():
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT count(*), sum(length(payload)) FROM scratch")).one()
    engine.dispose()


def test_processes_writing_one_file_with_checkpoints_lose_nothing(tmp_path: Path, url: str) -> None:
    store = Store(tmp_path, url)
    with store.engine.begin() as connection:
        connection.execute(sa.text(SCRATCH))
    store.close()
    context = multiprocessing.get_context("spawn")
    results, stop = context.Queue(), context.Event()
    reader = context.Process(target=read_rows, args=(url, stop))
    writers = [
        context.Process(target=write_rows, args=(str(tmp_path), url, p, results)) for p in range(WRITERS)
    ]
    reader.start()
    for writer in writers:
        writer.start()
    reports = [results.get(timeout=240) for _ in writers]
    stop.set()
    for process in [*writers, reader]:
        process.join(60)
        assert process.exitcode == 0

    database = tmp_path / "candor.db"
    with sqlite3.connect(database) as connection:  # a connection of its own, not the Store's
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(connection.execute("SELECT proc, count(*) FROM scratch GROUP BY proc").fetchall())
        names = [name for (name,) in connection.execute("SELECT name FROM api_keys")]
    assert sum(checkpoints for *_, checkpoints in reports) > 0, "no checkpoint ran"
    for proc, committed, keys, _ in reports:
        assert committed == COMMITS and rows[proc] == committed
        assert sum(name.startswith(f"writer-{proc}-") for name in names) == keys
    wal = Path(str(database) + "-wal")
    written = WRITERS * COMMITS * PAYLOAD
    assert not wal.exists() or wal.stat().st_size < written / 2, "the log was never reset"


def test_a_fresh_connection_reads_back_wal_and_store_connections_take_turns(tmp_path: Path, url: str) -> None:
    store = Store(tmp_path, url)
    with store.engine.connect() as connection:
        dbapi_connection = connection.connection.dbapi_connection
        assert isinstance(dbapi_connection, TurnConnection)
        assert dbapi_connection.turn_path == str(tmp_path / "candor.db") + SUFFIX
    store.close()
    with sqlite3.connect(tmp_path / "candor.db") as fresh:
        assert fresh.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def insert_one(url: str, ready: Any) -> None:
    engine = sa.create_engine(url, connect_args={"factory": TurnConnection})
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
        ready.set()
        connection.execute(sa.text("INSERT INTO scratch (proc, payload) VALUES (9, x'00')"))
        connection.commit()
    engine.dispose()


def checkpoint(url: str, ready: Any) -> None:
    engine = sa.create_engine(url, connect_args={"factory": TurnConnection})
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
        ready.set()
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    engine.dispose()


@pytest.mark.parametrize("target", [insert_one, checkpoint])
def test_another_process_waits_for_the_turn_to_write_or_checkpoint(
    tmp_path: Path, url: str, target: Any
) -> None:
    store = Store(tmp_path, url)  # open throughout: its connection keeps the log (the last close removes it)
    with store.engine.begin() as connection:
        connection.execute(sa.text(SCRATCH))
        connection.execute(sa.text("INSERT INTO scratch (proc, payload) VALUES (0, x'00')"))
    database = tmp_path / "candor.db"
    wal = Path(str(database) + "-wal")
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    process = context.Process(target=target, args=(url, ready))
    with turn_held(database):
        process.start()
        assert ready.wait(60), "the process did not reach its statement"
        time.sleep(0.5)
        assert process.is_alive(), "it went ahead while another process had the turn"
        assert wal.stat().st_size > 0
        with sqlite3.connect(database) as connection:
            assert connection.execute("SELECT count(*) FROM scratch").fetchone() == (1,)
    process.join(60)
    assert process.exitcode == 0
    with sqlite3.connect(database) as connection:
        expected = 2 if target is insert_one else 1
        assert connection.execute("SELECT count(*) FROM scratch").fetchone() == (expected,)
    if target is checkpoint:
        assert wal.stat().st_size == 0  # TRUNCATE ran once the turn was free
    store.close()


def test_a_thread_holding_the_turn_is_refused_a_second_one_not_hung(tmp_path: Path, url: str) -> None:
    store = Store(tmp_path, url)
    with store.engine.begin() as first:
        first.execute(sa.text(SCRATCH))
        first.execute(sa.text("INSERT INTO scratch (proc, payload) VALUES (1, x'00')"))
        refused = pytest.raises(
            sa.exc.OperationalError, match="holds the writers' turn on another connection"
        )
        with refused, store.engine.begin() as second:
            second.execute(sa.text("INSERT INTO scratch (proc, payload) VALUES (2, x'00')"))
    store.close()


def test_closing_does_not_wait_for_a_turn_held_elsewhere(tmp_path: Path, url: str) -> None:
    store = Store(tmp_path, url)
    with store.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    closed = threading.Event()
    with turn_held(tmp_path / "candor.db"):
        closer = threading.Thread(target=lambda: (store.close(), closed.set()))
        closer.start()
        assert closed.wait(10)
    closer.join()


def test_the_warning_is_for_engines_outside_the_scheme_only(tmp_path: Path, url: str) -> None:
    store = Store(tmp_path, url)
    assert sqlite_warning(store.engine, (3, 40, 1)) is None  # the default: every write takes the turn
    outside = sa.create_engine(url)  # WAL (the file's mode), but connections that take no turn
    try:
        message = sqlite_warning(outside, (3, 40, 1))
        assert message is not None and "WAL-reset bug" in message
        assert sqlite_warning(outside, (3, 51, 3)) is None
    finally:
        outside.dispose()
        store.close()


@pytest.mark.parametrize("threshold", [1, 0])
def test_the_automatic_checkpoint_runs_inside_the_commit(tmp_path: Path, url: str, threshold: int) -> None:
    """The committing call returns only after its automatic checkpoint has copied the pages into the database
    file, so it ran while that connection still had the turn (0: automatic checkpoints off, the control)."""
    store = Store(tmp_path, url)
    sa.event.listen(
        store.engine,
        "connect",
        lambda c, _r: sqlite3.Cursor(c).execute(f"PRAGMA wal_autocheckpoint={threshold}"),
    )
    store.engine.dispose()  # connections from here on have the threshold
    with store.engine.begin() as connection:
        connection.execute(sa.text(SCRATCH))
    database = tmp_path / "candor.db"
    before = database.stat().st_size
    with store.engine.begin() as connection:
        for _ in range(20):
            connection.execute(
                sa.text("INSERT INTO scratch (proc, payload) VALUES (1, :b)"), {"b": b"x" * 8000}
            )
    grown = database.stat().st_size - before
    assert (grown >= 20 * 8000) is (threshold > 0), grown
    store.close()


@pytest.mark.parametrize(
    ("sql", "reads"),
    [
        ("SELECT 1", True),
        ("  select count(*) FROM scratch", True),
        ("PRAGMA read_uncommitted", True),
        ("PRAGMA main.table_info(scratch)", True),
        ("PRAGMA journal_mode", True),
        ("PRAGMA journal_mode=WAL", False),
        ("PRAGMA wal_checkpoint", False),
        ("PRAGMA wal_checkpoint(TRUNCATE)", False),
        ("PRAGMA optimize;", False),
        ("INSERT INTO scratch VALUES (1, 1, x'00')", False),
        ("WITH t AS (SELECT 1) INSERT INTO scratch SELECT 2, 2, x'00' FROM t", False),
        ("CREATE TABLE t (n INTEGER)", False),
        ("SAVEPOINT sa_1", False),
    ],
)
def test_which_statements_take_the_turn(sql: str, reads: bool) -> None:
    assert reads_only(sql) is reads

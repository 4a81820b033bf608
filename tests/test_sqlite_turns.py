"""Writers to one SQLite file take turns on a lock file beside it (model_store.sqlite_turns): an audit append
waits for the turn instead of sleeping in SQLite's busy handler, the turn ends with the transaction, every
write takes it (not only those that ask), and other databases have no lock file."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from test_audit import draft

from model_store.audit_blobs import verify_trail
from model_store.sqlite_turns import SUFFIX, TURN, take_write_turn
from model_store.store import Store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path, f"sqlite:///{tmp_path / 'candor.db'}")
    yield store
    store.close()


def lock_file(store: Store) -> str:
    return str(store.engine.url.database) + SUFFIX


@contextmanager
def held_elsewhere(path: str) -> Iterator[None]:
    """The turn, taken by another open file description (as another process would)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def is_free(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_an_audit_append_waits_for_the_turn_and_then_commits(sqlite_store: Store) -> None:
    appended = threading.Event()

    def append() -> None:
        sqlite_store.audit.append([draft(1)])
        appended.set()

    with held_elsewhere(lock_file(sqlite_store)):
        writer = threading.Thread(target=append)
        writer.start()
        assert not appended.wait(0.5), "the append went ahead while another writer had the turn"
        assert sqlite_store.audit.count() == 0
    assert appended.wait(10)
    writer.join()
    assert sqlite_store.audit.count() == 1
    assert verify_trail(sqlite_store.audit_log)["ok"]


def test_the_turn_lasts_until_the_transaction_ends(sqlite_store: Store) -> None:
    path = lock_file(sqlite_store)
    with pytest.raises(RuntimeError), sqlite_store.sessions.begin() as session:
        take_write_turn(session)
        take_write_turn(session)  # a second call in the same transaction keeps the one turn
        assert TURN in session.info
        assert not is_free(path)
        raise RuntimeError("rolled back")
    assert is_free(path)
    with sqlite_store.sessions.begin() as session:
        take_write_turn(session)
        assert not is_free(path)
    assert is_free(path)
    assert TURN not in session.info


def test_every_write_waits_for_the_turn_and_keeps_it_until_the_commit(sqlite_store: Store) -> None:
    """Not only the transactions that ask for the turn: a plain INSERT through the engine waits for it, and
    its transaction keeps it until it commits (so no checkpoint can overlap the commit)."""
    path = lock_file(sqlite_store)
    with sqlite_store.engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE scratch (n INTEGER)"))
    assert is_free(path)
    wrote, release = threading.Event(), threading.Event()

    def write() -> None:
        with sqlite_store.engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO scratch VALUES (1)"))
            wrote.set()
            release.wait(10)

    with held_elsewhere(path):
        writer = threading.Thread(target=write)
        writer.start()
        assert not wrote.wait(0.5), "the INSERT went ahead while another writer had the turn"
    assert wrote.wait(10)
    assert not is_free(path), "the turn ended before the transaction did"
    release.set()
    writer.join()
    assert is_free(path)
    with sqlite_store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT n FROM scratch")).scalar_one() == 1


def test_concurrent_appends_from_threads_keep_one_chain(sqlite_store: Store) -> None:
    def append(start: int) -> None:
        for i in range(start, start + 25):
            sqlite_store.audit.append([draft(i)])

    writers = [threading.Thread(target=append, args=(n * 100,)) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert sqlite_store.audit.count() == 100
    assert verify_trail(sqlite_store.audit_log)["ok"]


def test_other_databases_take_no_turn(store: Store, tmp_path: Path) -> None:
    """On PostgreSQL the chain's row lock orders writers; nothing is created beside anything."""
    with store.sessions.begin() as session:
        take_write_turn(session)
        expected = store.engine.dialect.name == "sqlite"
        assert (TURN in session.info) is expected
    store.audit.append([draft(1)])
    assert verify_trail(store.audit_log)["ok"]


def test_a_commit_flushes_the_log_to_disk_after_passing_the_turn_on(
    sqlite_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: SQLite writes the commit's frames without flushing them (``synchronous=NORMAL``), and
    the committing connection flushes the log file itself once the turn is free for the next writer."""
    flushed: list[tuple[str, bool]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        flushed.append((os.readlink(f"/proc/self/fd/{fd}"), is_free(lock_file(sqlite_store))))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    sqlite_store.audit.append([draft(1)])
    wal = str(sqlite_store.engine.url.database) + "-wal"
    assert (wal, True) in flushed, flushed
    with sqlite_store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL

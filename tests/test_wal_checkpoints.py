"""SQLite's log is checkpointed by the Store's background thread, not inside the commit that crosses the
threshold; the thread never creates a database file and stops with the Store."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from model_store import audit_blobs
from model_store.audit_blobs import Blob
from model_store.store import Store
from model_store.wal_checkpoints import FALLBACK_PAGES, WalCheckpointer, sqlite_file

LOGGED_BYTES = 4 * 2**20


def _wait_for(condition, seconds: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_logged_pages_reach_the_database_file_without_a_commit_checkpointing(tmp_path: Path) -> None:
    database = tmp_path / "candor.db"
    store = Store(tmp_path, f"sqlite:///{database}")
    try:
        with store.engine.connect() as connection:
            pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
        assert pages == FALLBACK_PAGES  # 64 MB: 4 MB of writes never make a commit checkpoint
        before = database.stat().st_size
        data = os.urandom(LOGGED_BYTES)
        with store.sessions.begin() as session:
            audit_blobs.write(session, [Blob(hashlib.sha256(data).hexdigest(), memoryview(data))])
        assert _wait_for(lambda: database.stat().st_size >= before + LOGGED_BYTES)
    finally:
        store.close()
    assert store.checkpointer is not None and not store.checkpointer._thread.is_alive()
    assert store.checkpointer.checkpoint() == (0, 0, 0)  # the log is empty once the Store is closed


def test_a_checkpointer_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    checkpointer = WalCheckpointer(missing, every=0.01)
    try:
        time.sleep(0.1)
        assert checkpointer.checkpoint() is None
        assert not missing.exists()
    finally:
        checkpointer.stop()


def test_only_sqlite_files_get_a_checkpointer(tmp_path: Path) -> None:
    assert sqlite_file(f"sqlite:///{tmp_path / 'a.db'}") == (tmp_path / "a.db").resolve()
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("sqlite://") is None
    assert sqlite_file("postgresql+psycopg://u:p@127.0.0.1/db") is None

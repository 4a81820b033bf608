"""Checkpoints of a SQLite database's write-ahead log, taken by a background thread.

Left to itself, SQLite checkpoints inside the commit that takes its log past ``wal_autocheckpoint`` pages:
that one commit then copies every logged page into the database file and fsyncs it (16 MB, some 40-60 ms
here), so one request in every few pays for the others' writes. A ``WalCheckpointer`` runs a PASSIVE
checkpoint about once a second instead, on its own connection, off every request's path; the engine's
connections keep a higher ``wal_autocheckpoint`` (``FALLBACK_PAGES``) as the backstop when no checkpointer
runs (or one cannot keep up). A PASSIVE checkpoint never waits for readers or writers: it copies the frames
no reader still needs, and SQLite restarts the log once all of them are copied.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("candor.store")
EVERY_SECONDS = 1.0
FALLBACK_PAGES = 4096
"""``wal_autocheckpoint`` of the engine's connections: 64 MB of log on 16 kB pages."""


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path).resolve()


class WalCheckpointer:
    """A daemon thread checkpointing ``path``'s log every ``every`` seconds until ``stop``."""

    def __init__(self, path: Path, every: float = EVERY_SECONDS) -> None:
        self.path = path
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="candor-wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def checkpoint(self) -> tuple[int, int, int] | None:
        """One PASSIVE checkpoint: (busy, frames in the log, frames copied), or None when the database
        cannot be opened (not created yet, or removed: ``mode=rw`` never creates a file)."""
        try:
            connection = sqlite3.connect(f"{self.path.as_uri()}?mode=rw", uri=True, timeout=0)
        except sqlite3.Error:
            return None
        try:
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(busy), int(frames), int(copied)
        except sqlite3.Error as exc:  # another process is checkpointing, or the file is not a database
            log.debug("wal checkpoint of %s skipped: %s", self.path, exc)
            return None
        finally:
            connection.close()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.checkpoint()

"""Writers to one SQLite file take turns on an exclusive ``flock`` of a file beside it (``*.db.writers``).

Every connection ``model_store.db.make_engine`` opens is a ``TurnConnection``: it waits for the turn before
its first statement that may write (anything but a ``SELECT`` or a reading ``PRAGMA``) and keeps it until its
transaction ends (commit, rollback, or the end of a statement that ran outside a transaction). SQLite
checkpoints its write-ahead log inside a commit (the automatic checkpoint runs in the commit that takes the
log past its threshold), on ``PRAGMA wal_checkpoint`` (a write here) and when the last connection to the file
closes; a commit that resets the log is a write. So every checkpoint and every reset happens in a connection
holding the turn, and none overlaps another connection's commit: the race behind the WAL-reset bug (see
``model_store.db``). ``close`` takes the turn when it is free; when another connection holds it, the closing
one is not the last and does not checkpoint.

Commits are durable when ``commit()`` returns, and writers still do not wait for one another's disk flush
(group commit): connections run with ``synchronous=NORMAL``, so SQLite writes a commit's frames to the log
without flushing it, and the committing connection flushes the log file itself after it has passed the turn
on. Flushes of several writers then overlap, and one flush makes every frame written before it durable. A
frame a checkpoint has copied into the database file is durable there (in WAL mode with ``NORMAL``, SQLite
flushes the log before a checkpoint and the database file after it), so a log reset in between loses nothing.

The turn also makes writers queue: SQLite's busy handler sleeps on a fixed back-off (1, 2, 5, 10, 15, 20,
25, 25, 25, 50, 50, 100 ms, ...), and under a few concurrent requests a writer slept 80-330 ms for a lock held
1-3 ms; a blocking ``flock`` wakes the next writer as soon as the last one's transaction ends. Each turn opens
the file anew, so threads of one process queue as processes do.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

TURN = "candor.sqlite_turn"  # session.info key: the session's transaction took the turn explicitly
SUFFIX = ".writers"
_HOLDERS: dict[tuple[str, int], int] = {}  # (lock file, thread) -> id of the connection holding the turn


PRAGMA_QUERY = re.compile(r"\s*PRAGMA\s+(?:\w+\.)?(\w+)\s*(?:\(|;|$)", re.IGNORECASE)
WRITING_PRAGMAS = frozenset({"wal_checkpoint", "optimize", "incremental_vacuum"})


def reads_only(sql: str) -> bool:
    """Whether a statement surely does not write: a ``SELECT``, or a ``PRAGMA`` that reads (no ``=``, and not
    one of the few that write when queried). Anything else takes the turn."""
    if sql.lstrip()[:6].upper() == "SELECT":
        return True
    pragma = PRAGMA_QUERY.match(sql)
    return pragma is not None and pragma.group(1).lower() not in WRITING_PRAGMAS


def lock(path: str, wait: bool) -> int | None:
    """A descriptor of ``path`` holding its exclusive flock, or None when (without ``wait``) it is taken.

    A waiter first queues on ``path + ".queue"`` and holds that while it waits for the turn, so the writer
    that just ended its turn cannot take it again ahead of the one waiting (flock wakes every waiter and lets
    them race, which the writer already running wins): turns pass from writer to writer."""
    if not wait:
        return _flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    queue = _flock(path + ".queue", fcntl.LOCK_EX)
    try:
        return _flock(path, fcntl.LOCK_EX)
    finally:
        if queue is not None:
            os.close(queue)


def _flock(path: str, operation: int) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


class TurnConnection(sqlite3.Connection):
    """A sqlite3 connection whose writes and checkpoints wait for the writers' turn of its database file.

    In-memory and temporary databases (no file) take no turn: no other connection shares them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn: int | None = None
        self._pinned = False
        self._holder = ("", 0)
        self.turn_path: str | None = None
        rows = sqlite3.Cursor(self).execute("PRAGMA database_list").fetchall()
        main = next((str(row[2]) for row in rows if row[1] == "main"), "")
        self.turn_path = main + SUFFIX if main else None

    @property
    def has_turn(self) -> bool:
        return self._turn is not None

    def take_turn(self, *, wait: bool = True, pin: bool = False) -> bool:
        """Take the turn (waiting for it, or only trying); ``pin`` keeps it until the transaction ends even
        through statements that run outside one. False when there is no file or (without ``wait``) it is
        taken."""
        if self.turn_path is None:
            return False
        if self._turn is None:
            held = _HOLDERS.get((self.turn_path, threading.get_ident()))
            if wait and held is not None and held != id(self):
                raise sqlite3.OperationalError(
                    "database is locked: this thread holds the writers' turn on another connection"
                )
            fd = lock(self.turn_path, wait)
            if fd is None:
                return False
            self._turn = fd
            self._holder = (self.turn_path, threading.get_ident())
            _HOLDERS[self._holder] = id(self)
        self._pinned = self._pinned or pin
        return True

    def end_turn(self) -> None:
        fd, self._turn, self._pinned = self._turn, None, False
        if fd is not None:
            _HOLDERS.pop(self._holder, None)
            os.close(fd)

    def before_statement(self, sql: str) -> None:
        if self._turn is None and self.turn_path is not None and not reads_only(sql):
            self.take_turn()

    def after_statement(self) -> None:
        if not self._pinned and not self.in_transaction:
            self.end_turn()

    def cursor(self, factory: Any = None) -> Any:
        return super().cursor(factory or TurnCursor)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> Any:
        return self.cursor().executescript(script)

    def commit(self) -> None:
        wrote = self._turn is not None
        try:
            super().commit()
        finally:
            self.end_turn()
        if wrote:
            flush_log(self.turn_path)

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self) -> None:
        """The last connection to close checkpoints the log, so it closes holding the turn when it can; when
        another connection has the turn, this one is not the last and closing does not checkpoint (nor does it
        wait, which could deadlock a thread that holds the turn on another connection)."""
        try:
            self.take_turn(wait=False)
            super().close()
        finally:
            self.end_turn()


def flush_log(turn_path: str | None) -> None:
    """Flush the database's write-ahead log to disk (a commit's frames with it). No log file: the last
    connection's checkpoint has already copied it into the database file and flushed that."""
    if turn_path is None:
        return
    try:
        fd = os.open(turn_path[: -len(SUFFIX)] + "-wal", os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TurnCursor(sqlite3.Cursor):
    """Runs each statement inside the connection's turn when the statement may write."""

    connection: TurnConnection

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        self.connection.before_statement(sql)
        try:
            return super().execute(sql, parameters)
        finally:
            self.connection.after_statement()

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Any:
        self.connection.before_statement(sql)
        try:
            return super().executemany(sql, parameters)
        finally:
            self.connection.after_statement()

    def executescript(self, script: str, /) -> Any:
        self.connection.before_statement(script)
        try:
            return super().executescript(script)
        finally:
            self.connection.after_statement()


def take_write_turn(session: Session) -> None:
    """Wait for the turn of this session's SQLite file now, before the transaction reads what it will write
    (its first write would take it anyway); the turn lasts until the transaction ends. Nothing on other
    databases or in memory."""
    if TURN in session.info:
        return
    dbapi_connection = session.connection().connection.dbapi_connection
    if isinstance(dbapi_connection, TurnConnection) and dbapi_connection.take_turn(pin=True):
        session.info[TURN] = True


def end_turns_with_transactions(factory: sessionmaker[Session]) -> None:
    """Forget a session's turn when its outermost transaction ends (the connection's commit or rollback has
    ended the turn itself)."""
    event.listen(factory, "after_transaction_end", _end_turn)


def _end_turn(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(TURN, None)

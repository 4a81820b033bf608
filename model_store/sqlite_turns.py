"""Writers to one SQLite file take turns on an exclusive ``flock`` of a file beside it.

SQLite lets one writer in at a time, and a writer that finds the write lock taken sleeps in its busy handler
on a fixed back-off (1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms, ...): under a few concurrent requests
a writer slept 80-330 ms for a lock held 1-3 ms. A blocking ``flock`` wakes the next writer as soon as the
last one's transaction ends. Each turn opens the file anew, so threads of one process queue as processes do.
"""

from __future__ import annotations

import fcntl
import os

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

TURN = "candor.sqlite_turn"  # session.info key: the open lock file's descriptor
SUFFIX = ".writers"


def take_write_turn(session: Session) -> None:
    """Wait for this session's turn to write its SQLite file; the turn lasts until its transaction ends.

    Nothing on other databases or in memory, or when the session has its turn already. A transaction that has
    written already (and so may hold SQLite's write lock) only tries, never waits: two writers never wait on
    each other, and the one without a turn falls back to SQLite's busy handler."""
    if TURN in session.info:
        return
    connection = session.connection()
    database = connection.engine.url.database
    if connection.dialect.name != "sqlite" or not database or database == ":memory:":
        return
    has_written = bool(getattr(connection.connection.dbapi_connection, "in_transaction", True))
    fd = os.open(database + SUFFIX, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if has_written else 0))
    except BlockingIOError:
        os.close(fd)
        return
    except BaseException:
        os.close(fd)
        raise
    session.info[TURN] = fd


def end_turns_with_transactions(factory: sessionmaker[Session]) -> None:
    """Release a session's turn when its outermost transaction ends (after the commit or rollback)."""
    event.listen(factory, "after_transaction_end", _end_turn)


def _end_turn(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        fd = session.info.pop(TURN, None)
        if fd is not None:
            os.close(fd)

"""The audit trail: append-only explanation records in a hash chain.

Each record's ``body`` is canonical JSON (sorted keys, no spaces) holding its sequence number, the previous
record's hash and everything recorded; its ``hash`` is the sha256 of that body. Appenders queue on the one
``audit_head`` row, so the chain has a single order across processes and hosts. A purge deletes a prefix of
the chain and appends a checkpoint naming the last purged record's hash, so what remains still verifies.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import orjson
from sqlalchemy import Select, Table, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from model_store.errors import NotFound
from model_store.sqlite_turns import take_write_turn
from model_store.tables import AuditHeadRow, ExplainKeyRow, RecordRow, as_utc, utcnow

GENESIS = "0" * 64
CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
CHECKPOINT = "checkpoint"
STREAM_BATCH = 500
RECORDS = cast(Table, RecordRow.__table__)
HEAD = cast(Table, AuditHeadRow.__table__)
HEAD_ROW = HEAD.c.id == 1
TOUCH_HEAD = update(HEAD).where(HEAD_ROW).values(seq=HEAD.c.seq)
"""A write to the head row that changes nothing: a row lock on PostgreSQL, the write lock on SQLite."""
LOCK_HEAD = TOUCH_HEAD.returning(HEAD.c.seq, HEAD.c.hash)


def json_default(value: Any) -> Any:
    """What orjson cannot write itself: numpy scalars as Python numbers, sets and tuples as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def canonical_json(value: Any) -> bytes:
    """The one byte form a record is hashed in."""
    return orjson.dumps(value, default=json_default, option=CANONICAL)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def serialised(content: dict[str, Any]) -> dict[str, bytes]:
    """``content`` with each value in its canonical JSON: what a record is hashed in. Job workers serialise
    their rows' records this way, in parallel, so the chain's one writer only frames and hashes them."""
    return {
        key: value if isinstance(value, bytes) else canonical_json(value) for key, value in content.items()
    }


def framed(content: dict[str, Any]) -> dict[str, Any]:
    """Serialised values (bytes) embedded as they are: the body's bytes are those of the plain values."""
    return {
        key: orjson.Fragment(value) if isinstance(value, bytes) else value for key, value in content.items()
    }


@dataclasses.dataclass(frozen=True)
class RecordDraft:
    """A record before the chain numbers it: the indexed fields and the rest of its content (a value may be
    already serialised: bytes of its canonical JSON, see ``serialised``)."""

    id: str
    kind: str
    model_name: str | None
    model_version: int | None
    key_id: str | None
    status: str
    content: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RecordFilter:
    model: str | None = None
    version: int | None = None
    kind: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    models: frozenset[str] | None = None
    """The caller's model allowlist (None: every model)."""

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.models is not None:
            query = query.where(RecordRow.model_name.in_(sorted(self.models)))
        if self.model is not None:
            query = query.where(RecordRow.model_name == self.model)
        if self.version is not None:
            query = query.where(RecordRow.model_version == self.version)
        if self.kind is not None:
            query = query.where(RecordRow.kind == self.kind)
        if self.since is not None:
            query = query.where(RecordRow.recorded_at >= self.since)
        if self.until is not None:
            query = query.where(RecordRow.recorded_at < self.until)
        return query


INDEXED = ("id", "kind", "model_name", "model_version", "key_id", "status")


def summary(row: RecordRow) -> dict[str, Any]:
    """The indexed fields of a record (what a listing shows)."""
    return {
        "id": row.id,
        "seq": row.seq,
        "recorded_at": as_utc(row.recorded_at),
        "kind": row.kind,
        "model": {"name": row.model_name, "version": row.model_version},
        "key_id": row.key_id,
        "status": row.status,
        "hash": row.hash,
    }


def full_record(row: RecordRow) -> dict[str, Any]:
    """The record as stored (its canonical body) plus its hash."""
    return {**orjson.loads(row.body), "hash": row.hash}


class AuditTrail:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    # -- writing ------------------------------------------------------------------------------------------

    def append(self, drafts: Sequence[RecordDraft], session: Session | None = None) -> list[str]:
        """Chain and store ``drafts`` in order; returns their hashes. With ``session`` the records join the
        caller's transaction (a job commits a chunk's records with its progress), else they commit here."""
        if session is not None:
            return self._append(session, drafts)
        with self.sessions.begin() as own:
            return self._append(own, drafts)

    def _append(self, session: Session, drafts: Sequence[RecordDraft]) -> list[str]:
        if not drafts:
            return []
        seq, prev = self._lock_head(session)
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for draft in drafts:
            seq += 1
            body = canonical_json(
                {
                    **framed(draft.content),
                    **{name: getattr(draft, name) for name in INDEXED},
                    "seq": seq,
                    "prev_hash": prev,
                    "recorded_at": now,
                }
            )
            digest = sha256_hex(body)
            rows.append(
                {
                    **{name: getattr(draft, name) for name in INDEXED},
                    "seq": seq,
                    "recorded_at": now,
                    "prev_hash": prev,
                    "hash": digest,
                    "body": body.decode(),
                }
            )
            prev = digest
        connection = session.connection()  # Core statements: the ORM's per-statement work was ~2 of ~3 ms
        connection.execute(insert(RECORDS), rows)
        connection.execute(update(HEAD).where(HEAD_ROW).values(seq=seq, hash=prev))
        return [row["hash"] for row in rows]

    def lock(self, session: Session) -> None:
        """Take the chain's lock in ``session``'s transaction (held until it ends): a writer of blobs for a
        record takes it first, and so does the collection of unreferenced blobs, so neither can interleave."""
        self._lock_head(session)

    @staticmethod
    def _lock_head(session: Session) -> tuple[int, str]:
        """Take the chain's lock (a write to the head row: a row lock on PostgreSQL, the write lock on SQLite)
        and read the head as it is now: in one statement where the database can return rows from an
        UPDATE (PostgreSQL, SQLite 3.35 and later), else in two. Pending ORM changes are flushed first, so
        their row locks come before the chain's, as they did when this ran through the ORM. On SQLite the
        session first waits for its turn to write (model_store.sqlite_turns)."""
        take_write_turn(session)
        session.flush()
        connection = session.connection()
        if connection.dialect.update_returning:
            head = connection.execute(LOCK_HEAD).one()
        else:
            connection.execute(TOUCH_HEAD)
            head = connection.execute(select(HEAD.c.seq, HEAD.c.hash).where(HEAD_ROW)).one()
        return int(head.seq), str(head.hash)

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            row = session.scalar(select(RecordRow).where(RecordRow.id == record_id))
            if row is None:
                raise NotFound(f"No explanation record '{record_id}'.")
            return full_record(row)

    def page(
        self, filters: RecordFilter, after_seq: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` summaries after ``after_seq`` in chain order, and the cursor of the next page."""
        query = filters.apply(select(RecordRow)).where(RecordRow.seq > after_seq)
        with self.sessions() as session:
            rows = session.scalars(query.order_by(RecordRow.seq).limit(limit + 1)).all()
            items = [summary(row) for row in rows[:limit]]
        return items, (items[-1]["seq"] if len(rows) > limit else None)

    def stream(self, filters: RecordFilter) -> Iterator[dict[str, Any]]:
        """Every matching record in chain order, read in batches (memory stays bounded) and decoded one at a
        time (a record that cannot be decoded fails where it stands, after the ones before it)."""
        after = 0
        while True:
            query = filters.apply(select(RecordRow)).where(RecordRow.seq > after)
            with self.sessions() as session:
                rows = session.scalars(query.order_by(RecordRow.seq).limit(STREAM_BATCH)).all()
            for row in rows:
                yield full_record(row)
            if len(rows) < STREAM_BATCH:
                return
            after = rows[-1].seq

    def head(self) -> dict[str, Any]:
        with self.sessions() as session:
            row = session.get(AuditHeadRow, 1)
            assert row is not None, "the audit_head row is created by migration 0002"
            return {"seq": row.seq, "hash": row.hash}

    # -- verifying ----------------------------------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        """Walk the chain: every body hashes to its hash, links to the previous hash, repeats its indexed
        columns, and the sequence has no gap up to the head."""
        head = self.head()
        with self.sessions() as session:
            first = session.scalar(select(func.min(RecordRow.seq)))
            anchors = self._checkpoint_anchors(session)
        checked = 0
        if first is None:
            brk = (
                None
                if head["seq"] == 0
                else {"seq": 1, "id": None, "reason": "records missing: the chain is empty"}
            )
            return self._verdict(checked, brk, head)
        expected_prev = GENESIS if first == 1 else anchors.get(first - 1)
        if expected_prev is None:
            brk = {"seq": first, "id": None, "reason": f"records before {first} are missing (no checkpoint)"}
            return self._verdict(checked, brk, head)
        expected_seq = first
        after = first - 1
        while True:
            with self.sessions() as session:
                rows = session.scalars(
                    select(RecordRow).where(RecordRow.seq > after).order_by(RecordRow.seq).limit(STREAM_BATCH)
                ).all()
                for row in rows:
                    reason = self._check_row(row, expected_seq, expected_prev)
                    if reason is not None:
                        return self._verdict(checked, {"seq": row.seq, "id": row.id, "reason": reason}, head)
                    checked += 1
                    expected_seq, expected_prev, after = row.seq + 1, row.hash, row.seq
            if len(rows) < STREAM_BATCH:
                break
        if expected_seq - 1 != head["seq"] or expected_prev != head["hash"]:
            brk = {"seq": expected_seq, "id": None, "reason": "the chain ends before its recorded head"}
            return self._verdict(checked, brk, head)
        return self._verdict(checked, None, head)

    @staticmethod
    def _verdict(checked: int, first_break: dict[str, Any] | None, head: dict[str, Any]) -> dict[str, Any]:
        return {"ok": first_break is None, "checked": checked, "first_break": first_break, "head": head}

    @staticmethod
    def _check_row(row: RecordRow, expected_seq: int, expected_prev: str) -> str | None:
        if row.seq != expected_seq:
            return f"sequence gap: expected {expected_seq}"
        if sha256_hex(row.body.encode()) != row.hash:
            return "the record's body does not match its hash"
        if row.prev_hash != expected_prev:
            return "the record does not link to the previous record's hash"
        try:
            body = orjson.loads(row.body)
        except orjson.JSONDecodeError:
            return "the record's body is not JSON"
        stored = {name: getattr(row, name) for name in INDEXED}
        stated = {name: body.get(name) for name in INDEXED}
        if stored != stated or body.get("seq") != row.seq or body.get("prev_hash") != row.prev_hash:
            return "the record's columns differ from its body"
        if body.get("recorded_at") != orjson.loads(canonical_json(as_utc(row.recorded_at))):
            return "the record's time differs from its body"
        return None

    @staticmethod
    def _checkpoint_anchors(session: Session) -> dict[int, str]:
        """Last purged sequence number -> that record's hash, from the checkpoint records that remain."""
        bodies = session.scalars(select(RecordRow.body).where(RecordRow.kind == CHECKPOINT)).all()
        anchors = {}
        for text in bodies:
            purged = orjson.loads(text).get("purged") or {}
            if isinstance(purged.get("through_seq"), int) and isinstance(purged.get("through_hash"), str):
                anchors[purged["through_seq"]] = purged["through_hash"]
        return anchors

    # -- retention ----------------------------------------------------------------------------------------

    def purge(self, before: dt.datetime, content: dict[str, Any] | None = None) -> dict[str, Any]:
        """Delete the records made before ``before`` (a prefix of the chain), and the idempotency keys that
        named them, and append a checkpoint that names the last deleted record's hash, in one transaction."""
        with self.sessions.begin() as session:
            self._lock_head(session)
            last = session.execute(
                select(RecordRow.seq, RecordRow.hash)
                .where(RecordRow.recorded_at < before)
                .order_by(RecordRow.seq.desc())
                .limit(1)
            ).first()
            if last is None:
                return {"purged": 0, "checkpoint": None}
            count = session.scalar(select(func.count()).where(RecordRow.seq <= last.seq)) or 0
            purged_ids = select(RecordRow.id).where(RecordRow.seq <= last.seq)
            session.execute(delete(ExplainKeyRow).where(ExplainKeyRow.record_id.in_(purged_ids)))
            session.execute(delete(RecordRow).where(RecordRow.seq <= last.seq))
            checkpoint_id = f"checkpoint-{last.seq}"
            draft = RecordDraft(
                id=checkpoint_id,
                kind=CHECKPOINT,
                model_name=None,
                model_version=None,
                key_id=None,
                status="ok",
                content={
                    **(content or {}),
                    "purged": {
                        "through_seq": last.seq,
                        "through_hash": last.hash,
                        "count": count,
                        "before": as_utc(before),
                    },
                },
            )
            self._append(session, [draft])
        return {"purged": count, "checkpoint": checkpoint_id}

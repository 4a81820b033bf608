"""The audit trail's records: each explanation's record is written as a leaf of the audit log.

A record's stored bytes (``body``) are canonical JSON (sorted keys, no spaces); its leaf hash is
SHA-256(0x00 || body). Version 2 records (``model_store.record_format``) hold the envelope once and name
what many records share (parts, stored once in ``audit_parts`` by the sha256 of their canonical JSON);
version 1 records (the hash chain's, carried into the log by migration 0008) are read as they were stored.
Writers insert their records with no place in the tree and never wait for one another's position:
``model_store.audit_log`` integrates them. A purge deletes records' bodies and keeps their rows and leaf
hashes, so the tree and every other record's proof still verify.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, cast

import orjson
from sqlalchemy import Select, Table, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from model_store.audit_chunks import ChunkCache, collect_chunks
from model_store.audit_parts import PartCache, parts_of, write_parts
from model_store.errors import IntegrityError, NotFound
from model_store.record_format import expand
from model_store.sqlite_turns import take_write_turn
from model_store.stored_form import (  # re-exported: what callers of the trail build records with
    CANONICAL,
    INDEXED,
    RecordDraft,
    StoredRecord,
    canonical_json,
    framed,
    json_default,
    leaf_hash_hex,
    serialised,
    sha256_hex,
    stored_form,
)
from model_store.tables import AuditHeadRow, ExplainKeyRow, RecordRow, as_utc, utcnow

__all__ = [
    "CANONICAL",
    "INDEXED",
    "AuditTrail",
    "RecordDraft",
    "RecordFilter",
    "StoredRecord",
    "canonical_json",
    "framed",
    "json_default",
    "leaf_hash_hex",
    "serialised",
    "sha256_hex",
    "stored_form",
    "summary",
]

CHECKPOINT = "checkpoint"
"""The kind of a version 1 purge's checkpoint record (still readable; no longer written)."""
STREAM_BATCH = 500
RECORDS = cast(Table, RecordRow.__table__)
HEAD = cast(Table, AuditHeadRow.__table__)
KEPT = or_(RECORDS.c.body.is_not(None), RECORDS.c.chunk_sha256.is_not(None))
"""Records whose stored bytes are kept (not purged): in their body, or in their job chunk."""
LOCK_HEAD = update(HEAD).where(HEAD.c.id == 1).values(seq=HEAD.c.seq)
"""A write to the head row that changes nothing: a row lock on PostgreSQL, the write lock on SQLite."""


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


def summary(row: Any) -> dict[str, Any]:
    """The indexed fields of a record (what a listing shows)."""
    return {
        "id": row.id,
        "seq": row.seq,
        "leaf_index": row.leaf_index,
        "recorded_at": as_utc(row.recorded_at),
        "kind": row.kind,
        "model": {"name": row.model_name, "version": row.model_version},
        "key_id": row.key_id,
        "status": row.status,
        "hash": row.hash,
    }


class AuditTrail:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.parts = PartCache()
        self.chunks = ChunkCache()

    # -- writing ------------------------------------------------------------------------------------------

    def append(self, drafts: Sequence[RecordDraft], session: Session | None = None) -> list[str]:
        """Store ``drafts`` (and the parts they name) in order; returns their leaf hashes (hex). With
        ``session`` the records join the caller's transaction (a job commits a chunk's records with its
        progress), else they commit here. They get their place in the tree when the log integrates them."""
        if session is not None:
            return self._append(session, drafts)
        with self.sessions.begin() as own:
            return self._append(own, drafts)

    def _append(self, session: Session, drafts: Sequence[RecordDraft]) -> list[str]:
        if not drafts:
            return []
        take_write_turn(session)
        now = utcnow()
        stored = [stored_form(draft, now) for draft in drafts]
        write_parts(session, {digest: data for record in stored for digest, data in record.parts.items()})
        rows = [{**record.row, "body": record.body.decode()} for record in stored]
        session.connection().execute(insert(RECORDS), rows)  # Core: the ORM's per-row work is not needed
        return [record.leaf_hash for record in stored]

    def lock(self, session: Session) -> None:
        """Take the log's lock in ``session``'s transaction (held until it ends): a writer of blobs for a
        record takes it first, and so does the collection of unreferenced blobs, so neither can interleave.
        On SQLite the session first waits for its turn to write (model_store.sqlite_turns)."""
        take_write_turn(session)
        session.flush()
        session.connection().execute(LOCK_HEAD)

    # -- reading ------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> dict[str, Any]:
        """The record as its client and auditors read it (a version 2 record expanded with its parts);
        ``NotFound`` when there is none or it was purged."""
        with self.sessions() as session:
            row = session.execute(select(RECORDS).where(RECORDS.c.id == record_id, KEPT)).first()
            if row is None:
                raise NotFound(f"No explanation record '{record_id}'.")
            return _record_or_raise(self.decoded(session, [row])[0])

    def decoded(self, session: Session, rows: Sequence[Any]) -> list[dict[str, Any] | Exception]:
        """Each row's record read back: a version 1 body as it was stored with its hash; a version 2 body
        expanded with its parts (read together, checked against their digests). A record that cannot be
        read (its bytes are not JSON, its chunk or a part is missing or changed) gets the exception in its
        place, so a stream fails where it stands, after the records before it."""
        return self._read(session, rows)[1]

    def _read(
        self, session: Session, rows: Sequence[Any]
    ) -> tuple[list[str | None], list[dict[str, Any] | Exception], list[dict[str, str]]]:
        """Each row's stored bytes (None when its chunk cannot be read), its record as ``decoded`` reads it,
        and the parts its bytes name (name -> digest)."""
        texts: list[str | None] = []
        bodies: list[Any] = []
        for row in rows:
            text = None
            try:
                text = self.stored(session, row)
                bodies.append(orjson.loads(text))
            except (orjson.JSONDecodeError, IntegrityError) as exc:
                bodies.append(exc)
            texts.append(text)
        named = [parts_of(body) if isinstance(body, dict) else {} for body in bodies]
        wanted = {digest for names in named for digest in names.values()}
        values = self.parts.resolve(session, wanted) if wanted else {}
        records: list[dict[str, Any] | Exception] = []
        for row, body, names in zip(rows, bodies, named, strict=True):
            missing = sorted(set(names.values()) - values.keys())
            if isinstance(body, Exception):
                records.append(body)
            elif missing:
                problem = f"Record '{row.id}' cannot be read: its part {missing[0]} is missing or changed."
                records.append(IntegrityError(problem))
            else:
                if names:
                    body = expand(body, {name: values[digest] for name, digest in names.items()})
                records.append({**body, "seq": row.seq, "leaf_index": row.leaf_index, "hash": row.hash})
        return texts, records, named

    def stored(self, session: Session, row: Any) -> str:
        """A kept record's stored bytes (text): its body, or its line of its job chunk."""
        text = self.chunks.body(session, row)
        if text is None:
            raise NotFound(f"Record '{row.id}' was purged.")
        return text

    def count(self) -> int:
        """How many records were written (purged ones included)."""
        with self.sessions() as session:
            return int(session.execute(select(func.count()).select_from(RECORDS)).scalar_one())

    def page(
        self, filters: RecordFilter, after_seq: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Up to ``limit`` summaries after ``after_seq`` in the order written, and the next page's start.
        Purged records are left out."""
        query = filters.apply(select(RecordRow)).where(RecordRow.seq > after_seq, KEPT)
        with self.sessions() as session:
            rows = session.scalars(query.order_by(RecordRow.seq).limit(limit + 1)).all()
            items = [summary(row) for row in rows[:limit]]
        return items, (items[-1]["seq"] if len(rows) > limit else None)

    def stream(self, filters: RecordFilter) -> Iterator[dict[str, Any]]:
        """Every matching record in the order written, read in batches (memory stays bounded) and decoded a
        batch at a time. Purged records are left out."""
        for batch in self._batches(filters.apply(select(RECORDS)).where(KEPT)):
            with self.sessions() as session:
                records = self.decoded(session, batch)
            for record in records:
                yield _record_or_raise(record)

    def leaves(
        self, filters: RecordFilter
    ) -> Iterator[tuple[Any, str | None, dict[str, Any] | None, dict[str, str]]]:
        """Every matching record that has its place in the tree, in leaf order, read in batches: its row,
        its stored bytes and decoded record (both None when purged) and the stored bytes (text) of the
        parts it names."""
        query = filters.apply(select(RECORDS)).where(RECORDS.c.leaf_index.is_not(None))
        after = -1
        while True:
            with self.sessions() as session:
                rows = session.execute(
                    query.where(RECORDS.c.leaf_index > after)
                    .order_by(RECORDS.c.leaf_index)
                    .limit(STREAM_BATCH)
                ).all()
                kept = [row for row in rows if row.body is not None or row.chunk_sha256 is not None]
                texts, records, named = self._read(session, kept)
                part_texts = self.parts.texts(session, {d for names in named for d in names.values()})
            read = {row.seq: (t, r, n) for row, t, r, n in zip(kept, texts, records, named, strict=True)}
            for row in rows:
                if row.seq not in read:  # purged: its leaf hash alone
                    yield row, None, None, {}
                    continue
                text, record, names = read[row.seq]
                decoded = _record_or_raise(record)
                yield row, text, decoded, {digest: part_texts[digest] for digest in names.values()}
            if len(rows) < STREAM_BATCH:
                return
            after = rows[-1].leaf_index

    def _batches(self, query: Select[Any]) -> Iterator[Sequence[Any]]:
        after = 0
        while True:
            with self.sessions() as session:
                rows = session.execute(
                    query.where(RECORDS.c.seq > after).order_by(RECORDS.c.seq).limit(STREAM_BATCH)
                ).all()
            if rows:
                yield rows
            if len(rows) < STREAM_BATCH:
                return
            after = rows[-1].seq

    # -- retention ----------------------------------------------------------------------------------------

    def purge(self, before: dt.datetime) -> dict[str, Any]:
        """Delete the stored bytes of the records made before ``before`` (their bodies; a job row's
        reference to its chunk, and the chunks no record refers to any more) and the idempotency keys that
        named them; their rows and leaf hashes stay, so the log still verifies. Returns how many."""
        gone = {"body": None, "chunk_sha256": None, "chunk_offset": None, "chunk_length": None}
        with self.sessions.begin() as session:
            take_write_turn(session)
            old = select(RECORDS.c.id).where(RECORDS.c.recorded_at < before, KEPT)
            ids = list(session.scalars(old).all())
            for start in range(0, len(ids), STREAM_BATCH):
                batch = ids[start : start + STREAM_BATCH]
                session.execute(delete(ExplainKeyRow).where(ExplainKeyRow.record_id.in_(batch)))
                session.execute(update(RECORDS).where(RECORDS.c.id.in_(batch)).values(gone))
            chunks = collect_chunks(session)
        return {"purged": len(ids), "chunks": chunks}


def _record_or_raise(record: dict[str, Any] | Exception) -> dict[str, Any]:
    if isinstance(record, Exception):
        raise record
    return record

"""Content-addressed blobs of explanation records: the bytes of big arrays (attention weights) kept out of a
record's body, stored once under their sha256 in ``audit_blobs`` in the transaction that appends the record.

This module stores, reads (checked against the sha256) and collects bytes only. What a record's reference
to a blob means (its dtype, shape and size, and how an array becomes one) is ``model_store.array_codec``'s.
The record's leaf hash covers the reference, so the log binds every blob; ``verify`` checks that each
referenced blob exists, still hashes to its key and has the size its reference states (the log itself is
verified by ``model_store.audit_verify``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session, sessionmaker

from model_store.array_codec import REF_KEY, Blob, is_kept, reference_problem, references
from model_store.audit import RECORDS, AuditTrail, RecordDraft
from model_store.audit_chunks import CHUNKS, ChunkCache
from model_store.audit_log import AuditLog
from model_store.audit_verify import verify_log
from model_store.db import insert_missing
from model_store.errors import Conflict, IntegrityError, NotFound
from model_store.tables import AuditBlobRow, utcnow

VERIFY_BATCH = 200


def _reference_problem(ref: dict[str, Any], stored: bytes | None, known: dict[str, int]) -> str | None:
    """Why ``ref`` fails against its stored blob (None: it holds); ``known`` maps blobs already hashed to
    their size, and gains this one."""
    sha = ref[REF_KEY]
    if sha in known:
        size = known[sha]
    elif stored is None:
        return f"the blob {sha} is missing"
    elif hashlib.sha256(stored).hexdigest() != sha:
        return f"the blob {sha} does not match its sha256"
    else:
        size = known[sha] = len(stored)
    return reference_problem(ref, size)


def write(session: Session, blobs: Sequence[Blob]) -> None:
    """Store ``blobs`` in the caller's transaction; a blob already stored (same sha256) is kept as it is.
    Inserted in sha256 order, so two transactions sharing blobs cannot deadlock on them."""
    unique = {blob.sha256: blob for blob in blobs}
    if not unique:
        return
    now = utcnow()
    rows = [
        {"sha256": sha, "size": blob.data.nbytes, "data": blob.data, "created_at": now}
        for sha, blob in sorted(unique.items())
    ]
    insert_missing(session, AuditBlobRow, rows)


def append_with_blobs(
    audit: AuditTrail, session: Session, drafts: Sequence[RecordDraft], blobs: Sequence[Blob]
) -> None:
    """Append ``drafts`` with the blobs their references name, in ``session``'s transaction:
    the blobs are written under the log's lock, so no collection of unreferenced blobs runs between the
    two (``AuditBlobs.collect`` takes the same lock)."""
    if blobs:
        audit.lock(session)
        write(session, blobs)
    audit.append(drafts, session=session)


def _stored(session: Session, sha256s: Iterable[str]) -> dict[str, bytes]:
    """The stored bytes of each of ``sha256s`` that exists, a batch of them per query."""
    wanted = sorted(set(sha256s))
    found: dict[str, bytes] = {}
    for start in range(0, len(wanted), VERIFY_BATCH):
        query = select(AuditBlobRow.sha256, AuditBlobRow.data)
        rows = session.execute(query.where(AuditBlobRow.sha256.in_(wanted[start : start + VERIFY_BATCH])))
        found.update((str(sha), bytes(data)) for sha, data in rows)
    return found


class AuditBlobs:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def load(self, sha256s: Iterable[str]) -> dict[str, bytes]:
        """The stored bytes of each of ``sha256s`` that exists, read in one session, a batch per query."""
        with self.sessions() as session:
            return _stored(session, sha256s)

    def checked(self, sha256: str) -> bytes:
        """The blob's bytes; ``NotFound`` when it is missing, ``Conflict`` when they no longer hash to
        ``sha256`` (bytes the log contradicts are never served)."""
        return self.all_checked([sha256])[sha256]

    def all_checked(self, sha256s: Iterable[str]) -> dict[str, bytes]:
        """``checked`` for many blobs, read together."""
        wanted = set(sha256s)
        stored = self.load(wanted)
        for sha in sorted(wanted):
            if sha not in stored:
                raise NotFound(f"The blob '{sha}' is missing: GET /v1/audit/verify reports the break.")
            if hashlib.sha256(stored[sha]).hexdigest() != sha:
                problem = f"The stored blob '{sha}' does not match its sha256"
                raise Conflict(f"{problem}: see GET /v1/audit/verify.")
        return stored

    def collect(self, audit: AuditTrail) -> int:
        """Delete the blobs no record refers to any more (after a purge); how many. Runs under the log's
        lock, which a request takes before writing its blobs, so no blob can gain a reference meanwhile."""
        with self.sessions.begin() as session:
            audit.lock(session)
            keep: set[str] = set()
            for row, refs in _referring_records(session):
                if refs is None:  # its references cannot be known: delete nothing
                    raise ValueError(f"Record {row.seq}'s body is not JSON: see `candor audit verify`.")
                keep.update(ref[REF_KEY] for ref in refs)
            unreferenced = sorted(set(session.scalars(select(AuditBlobRow.sha256)).all()) - keep)
            for start in range(0, len(unreferenced), VERIFY_BATCH):
                batch = unreferenced[start : start + VERIFY_BATCH]
                session.execute(delete(AuditBlobRow).where(AuditBlobRow.sha256.in_(batch)))
        return len(unreferenced)

    def verify(self) -> dict[str, Any]:
        """Every blob referenced by a record exists, hashes to its sha256 and has the stated size; the
        first record (in the order written) whose reference fails is the break. Digest-only references
        (``"kept": false``) have no blob to check: they are counted apart (``digest_only``); the leaf hash
        covers their digests."""
        checked, digest_only, known = 0, 0, dict[str, int]()
        with self.sessions() as session:
            for row, refs in _referring_records(session):
                if refs is None:
                    continue  # the log's check reports a body that is not JSON
                kept = [ref for ref in refs if is_kept(ref)]
                digest_only += len(refs) - len(kept)
                stored = _stored(session, {ref[REF_KEY] for ref in kept} - set(known))
                for ref in kept:
                    problem = _reference_problem(ref, stored.get(ref[REF_KEY]), known)
                    if problem is not None:
                        brk = {"seq": row.seq, "id": row.id, "reason": problem}
                        return _blobs_verdict(checked, len(known), digest_only, brk)
                    checked += 1
        return _blobs_verdict(checked, len(known), digest_only, None)


def _blobs_verdict(checked: int, distinct: int, digest_only: int, brk: Any) -> dict[str, Any]:
    return {"checked": checked, "distinct": distinct, "digest_only": digest_only, "first_break": brk}


def _referring_records(session: Session) -> Iterator[tuple[Any, list[dict[str, Any]] | None]]:
    """Each record whose stored bytes mention a blob reference (its body does, or it lies in a job chunk
    that does), in the order written (read in batches), with its explanation's references (None when its
    stored bytes cannot be read or are not JSON)."""
    chunks = ChunkCache(capacity=2)
    with_refs = select(CHUNKS.c.sha256).where(CHUNKS.c.has_refs)
    mentions = or_(RECORDS.c.body.contains(f'"{REF_KEY}"'), RECORDS.c.chunk_sha256.in_(with_refs))
    after = 0
    while True:
        rows = session.execute(
            select(RECORDS).where(RECORDS.c.seq > after, mentions).order_by(RECORDS.c.seq).limit(VERIFY_BATCH)
        ).all()
        for row in rows:
            try:
                text = chunks.body(session, row) or ""
                if f'"{REF_KEY}"' not in text:
                    continue  # another row of a chunk that has references
                refs: list[dict[str, Any]] | None = list(references(orjson.loads(text).get("explanation")))
            except (orjson.JSONDecodeError, IntegrityError):
                refs = None
            yield row, refs
        if len(rows) < VERIFY_BATCH:
            return
        after = rows[-1].seq


def verify_trail(audit_log: AuditLog) -> dict[str, Any]:
    """The log's check and the blob check in one verdict: ``ok`` only when both pass; ``first_break`` is the
    log's, else the blobs'; ``blobs`` tells how many references (and distinct blobs) were checked."""
    verdict = verify_log(audit_log)
    blobs = AuditBlobs(audit_log.sessions).verify()
    first_break = verdict["first_break"] or blobs["first_break"]
    return {**verdict, "ok": first_break is None, "first_break": first_break, "blobs": blobs}

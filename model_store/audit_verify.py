"""Verify the audit log from the database: every leaf recomputed from its record's stored bytes (a job
row's from its chunk, whose bytes are checked against its digest first), the tree's
root rebuilt from them and compared with the head, the stored tree and the latest signed checkpoint, and
every part a record names present and hashing to its digest.

Read in batches (memory stays bounded by the leaf count's 32 bytes each for the root's stack, not the
records). The blob check (``model_store.audit_blobs``) is separate; ``verify_trail`` there joins the two.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, cast

import orjson
from sqlalchemy import Table, select
from sqlalchemy.orm import Session, sessionmaker

from candor_verify import merkle
from model_store.audit import INDEXED, RECORDS, canonical_json, leaf_hash_hex, sha256_hex
from model_store.audit_chunks import ChunkCache
from model_store.audit_log import AuditLog
from model_store.audit_parts import PARTS
from model_store.errors import IntegrityError
from model_store.tables import AuditTreeRow, as_utc

BATCH = 1000
TREE = cast(Table, AuditTreeRow.__table__)


def _problem(row: Any, text: str | Exception | None) -> str | None:
    """Why a record's row contradicts its stored bytes (None: it does not)."""
    if isinstance(text, Exception):
        return str(text)  # its job chunk is missing or damaged
    if text is None:
        return None  # purged: only its leaf hash remains
    body_bytes = text.encode()
    if leaf_hash_hex(body_bytes) != row.leaf_hash:
        return "the record's stored bytes do not match its leaf hash"
    if row.prev_hash is not None and sha256_hex(body_bytes) != row.hash:
        return "the version 1 record's body does not match its hash"
    try:
        body = orjson.loads(body_bytes)
    except orjson.JSONDecodeError:
        return "the record's stored bytes are not JSON"
    stated = {name: body.get(name) for name in INDEXED}
    if stated != {name: getattr(row, name) for name in INDEXED}:
        return "the record's columns differ from its stored bytes"
    if body.get("recorded_at") != orjson.loads(canonical_json(as_utc(row.recorded_at))):
        return "the record's time differs from its stored bytes"
    return None


def _leaves(sessions: sessionmaker[Session]) -> Iterator[tuple[Any, str | Exception | None]]:
    """Each leaf's row in leaf order with its stored bytes (None when purged; the error when its chunk
    cannot be read), in batches."""
    after = -1
    query = select(RECORDS).where(RECORDS.c.leaf_index.is_not(None)).order_by(RECORDS.c.leaf_index)
    chunks = ChunkCache(capacity=2)
    while True:
        with sessions() as session:
            rows = session.execute(query.where(RECORDS.c.leaf_index > after).limit(BATCH)).all()
            texts: list[str | Exception | None] = []
            for row in rows:
                try:
                    texts.append(chunks.body(session, row))
                except IntegrityError as exc:
                    texts.append(exc)
        yield from zip(rows, texts, strict=True)
        if len(rows) < BATCH:
            return
        after = rows[-1].leaf_index


def _parts_problem(sessions: sessionmaker[Session], digests: set[str]) -> str | None:
    wanted = sorted(digests)
    with sessions() as session:
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start : start + BATCH]
            found = dict(
                session.execute(select(PARTS.c.sha256, PARTS.c.body).where(PARTS.c.sha256.in_(batch))).all()
            )
            for digest in batch:
                if digest not in found:
                    return f"the part {digest} is missing"
                if hashlib.sha256(found[digest].encode()).hexdigest() != digest:
                    return f"the part {digest} does not match its digest"
    return None


def verify_log(audit_log: AuditLog) -> dict[str, Any]:
    """Integrate what is pending, then check every leaf, part and the root (see the module docstring)."""
    size = audit_log.integrate()
    checkpoint = audit_log.checkpoint()
    sessions = audit_log.sessions
    builder, digests = merkle.RootBuilder(), set[str]()
    roots = {0: merkle.EMPTY_ROOT}  # the rebuilt root at the checkpoint's size
    first_break: dict[str, Any] | None = None
    for row, text in _leaves(sessions):
        if checkpoint is not None and builder.size == checkpoint["tree_size"]:
            roots[builder.size] = builder.root()
        if row.leaf_index != builder.size:
            first_break = _break(row, f"leaf {builder.size} is missing")
            break
        reason = _problem(row, text)
        if reason is not None:
            first_break = _break(row, reason)
            break
        if isinstance(text, str) and row.prev_hash is None:
            digests.update((orjson.loads(text).get("parts") or {}).values())
        builder.append(bytes.fromhex(row.leaf_hash))
    roots[builder.size] = builder.root()
    head = audit_log.head()
    if first_break is None:
        first_break = _tree_problem(audit_log, builder, size, head, checkpoint, roots)
    if first_break is None and (reason := _parts_problem(sessions, digests)) is not None:
        first_break = {"leaf_index": None, "seq": None, "id": None, "reason": reason}
    return {
        "ok": first_break is None,
        "checked": builder.size,
        "first_break": first_break,
        "head": head,
        "checkpoint": None
        if checkpoint is None
        else {"tree_size": checkpoint["tree_size"], "root": checkpoint["root"]},
    }


def _break(row: Any, reason: str) -> dict[str, Any]:
    return {"leaf_index": row.leaf_index, "seq": row.seq, "id": row.id, "reason": reason}


def _tree_problem(
    audit_log: AuditLog,
    builder: merkle.RootBuilder,
    size: int,
    head: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    roots: dict[int, bytes],
) -> dict[str, Any] | None:
    """Whether the rebuilt root agrees with the head, the stored tree and the latest checkpoint (its root
    and its signature, when this process holds the signing key)."""

    def brk(reason: str) -> dict[str, Any]:
        return {"leaf_index": builder.size, "seq": None, "id": None, "reason": reason}

    if builder.size < size:
        return brk(f"the log ends at {builder.size} leaves, before its head's {size}")
    root = builder.root()
    if head["root"] != root.hex():
        return brk("the rebuilt root differs from the head's")
    with audit_log.sessions() as session:
        if audit_log.root(builder.size, session) != root:
            return brk("the rebuilt root differs from the stored tree's")
    if checkpoint is not None:
        at = roots.get(checkpoint["tree_size"])
        if at is None or at.hex() != checkpoint["root"]:
            return brk(f"the checkpoint of size {checkpoint['tree_size']} names another root")
        if not audit_log.checkpoint_verifies(checkpoint):
            return brk(f"the checkpoint of size {checkpoint['tree_size']} is not signed by this log's key")
    return None

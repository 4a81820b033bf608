"""A batch job's rows stored once per chunk: the rows' record bytes and error lines, compressed together.

A chunk's bytes are one line per row in row order: a row that was explained is its record's stored bytes (its
leaf hash is SHA-256(0x00 || that line)), a row that failed is its error line (not a record). They are kept
zstd-compressed in ``audit_chunks`` under the sha256 of the uncompressed bytes, and each record's row names
its chunk and where its line lies. The job's result lines are read from the same bytes
(``api.jobs.results``), so a row is stored once; the records of a 1,000-row chunk compress well together
(they share feature names, categories and shapes).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import operator
import threading
from collections.abc import Iterator, Sequence
from typing import Any, cast

import pyarrow as pa
from sqlalchemy import Table, delete, select
from sqlalchemy.orm import Session

from model_store.array_codec import REF_KEY
from model_store.audit_parts import write_parts
from model_store.db import bound, insert_many, insert_missing
from model_store.errors import IntegrityError
from model_store.stored_form import StoredRecord
from model_store.tables import AuditChunkRow, RecordRow, utcnow

CHUNKS = cast(Table, AuditChunkRow.__table__)
RECORDS = cast(Table, RecordRow.__table__)
CODEC = "zstd"
REF_MARK = f'"{REF_KEY}"'.encode()
"""What a record's stored bytes hold when it refers to blobs (attention weights)."""


@dataclasses.dataclass(frozen=True)
class RecordChunk:
    """A chunk ready to store: its compressed bytes, their digest and size, and the rows of its records."""

    sha256: str
    size: int
    data: bytes
    has_refs: bool
    rows: list[dict[str, Any]]
    """Each record's row (no body: its chunk and the line's offset and length)."""
    parts: dict[str, bytes]


def pack(entries: Sequence[StoredRecord | bytes]) -> RecordChunk:
    """A chunk of ``entries`` in row order: a stored record, or an error line's bytes (no newline in any)."""
    lines, rows, parts, offset = [], [], {}, 0
    for entry in entries:
        line = entry.body if isinstance(entry, StoredRecord) else entry
        if isinstance(entry, StoredRecord):
            rows.append({**entry.row, "chunk_offset": offset, "chunk_length": len(line)})
            parts.update(entry.parts)
        lines.append(line)
        offset += len(line) + 1
    raw = b"\n".join(lines) + b"\n" if lines else b""
    sha = hashlib.sha256(raw).hexdigest()
    for row in rows:
        row["chunk_sha256"] = sha
    compressed = pa.compress(raw, codec=CODEC, asbytes=True)
    return RecordChunk(sha, len(raw), compressed, REF_MARK in raw, rows, parts)


def write(session: Session, chunk: RecordChunk) -> None:
    """Store the chunk (kept as it is when stored already), the parts its records name and their rows, in
    the caller's transaction; the records get their place in the tree when the log integrates them."""
    row = {
        "sha256": chunk.sha256,
        "size": chunk.size,
        "data": chunk.data,
        "has_refs": chunk.has_refs,
        "created_at": utcnow(),
    }
    insert_missing(session, AuditChunkRow, [row])
    write_parts(session, chunk.parts)
    if chunk.rows:
        columns = list(chunk.rows[0])
        times = {row["recorded_at"] for row in chunk.rows}  # a chunk's records share one: converted once
        driver_times = {t: bound(session, RECORDS.c.recorded_at, t) for t in times}
        values_of = operator.itemgetter(*columns)
        at = columns.index("recorded_at")  # the one column the driver may not take as it is
        values = []
        for row in chunk.rows:
            row_values = list(values_of(row))
            row_values[at] = driver_times[row_values[at]]
            values.append(tuple(row_values))
        insert_many(session, RECORDS, columns, values)


def collect_chunks(session: Session) -> int:
    """Delete the chunks no record refers to any more (after a purge), in the caller's transaction; how
    many. Their error lines go with them: a purged job's result is gone."""
    referred = select(RECORDS.c.chunk_sha256).where(RECORDS.c.chunk_sha256.is_not(None))
    result = session.execute(delete(CHUNKS).where(CHUNKS.c.sha256.not_in(referred)))
    return int(getattr(result, "rowcount", 0) or 0)


def unpacked(sha256: str, size: int, data: bytes) -> bytes:
    """A stored chunk's bytes, checked against its digest (``IntegrityError`` when they differ)."""
    try:
        raw = pa.decompress(data, decompressed_size=size, codec=CODEC, asbytes=True)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise IntegrityError(f"The stored chunk {sha256} cannot be decompressed.") from exc
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise IntegrityError(f"The stored chunk {sha256} does not match its sha256.")
    return cast(bytes, raw)


def lines(raw: bytes) -> Iterator[bytes]:
    """A chunk's lines, in row order."""
    start = 0
    while start < len(raw):
        end = raw.index(b"\n", start)
        yield raw[start:end]
        start = end + 1


class ChunkCache:
    """Chunks read (and checked) recently, by digest; a chunk never changes, so a hit needs no check."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._chunks: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: Session, sha256: str) -> bytes:
        with self._lock:
            raw = self._chunks.get(sha256)
            if raw is not None:
                self._chunks.move_to_end(sha256)
                return raw
        stored = session.execute(
            select(CHUNKS.c.size, CHUNKS.c.data).where(CHUNKS.c.sha256 == sha256)
        ).first()
        if stored is None:
            raise IntegrityError(f"The stored chunk {sha256} is missing.")
        raw = unpacked(sha256, int(stored.size), bytes(stored.data))
        with self._lock:
            self._chunks[sha256] = raw
            while len(self._chunks) > self.capacity:
                self._chunks.popitem(last=False)
        return raw

    def body(self, session: Session, row: Any) -> str | None:
        """A record row's stored bytes as text: its body, or its line of its chunk; None when purged."""
        if row.body is not None:
            return str(row.body)
        if row.chunk_sha256 is None:
            return None
        raw = self.get(session, row.chunk_sha256)
        start = int(row.chunk_offset)
        return raw[start : start + int(row.chunk_length)].decode()

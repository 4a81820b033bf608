"""SQLAlchemy 2 table mappings. Schema changes go through Alembic (``model_store/migrations``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    production_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    versions: Mapped[list[VersionRow]] = relationship(back_populates="model", order_by="VersionRow.version")


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    flavour: Mapped[str] = mapped_column(String(32), nullable=False)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    artifact_dir: Mapped[str] = mapped_column(String(64), nullable=False)
    artifact_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    reference_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    artifact_files: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    """Every file of the version by relative path: its sha256 in the artifact store. None: a version
    registered before content addressing, whose files are under ``<data_dir>/artifacts/<artifact_dir>``."""
    model: Mapped[ModelRow] = relationship(back_populates="versions")


class ArtifactPartRow(Base):
    """A blob of the ``database`` artifact store, in parts of a few MiB, all written in one transaction."""

    __tablename__ = "artifact_parts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class VersionCacheRow(Base):
    """Results computed once per version (global importance), shared by every worker."""

    __tablename__ = "version_cache"

    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    secret_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """The models this key may see; None: every model."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rotated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


SeqInt = BigInteger().with_variant(Integer, "sqlite")


class RecordRow(Base):
    """One explanation record, a leaf of the audit log. ``body`` is the record's stored bytes (canonical
    JSON): its leaf hash is SHA-256(0x00 || body). ``seq`` orders records as they were written;
    ``leaf_index`` is their place in the Merkle tree, given when the log integrates them (None until then).
    A purged record keeps its row and leaf hash without its body. ``prev_hash`` and ``hash`` are a version
    1 record's chain link and the sha256 of its body; a version 2 record has no link and its ``hash`` is
    its leaf hash."""

    __tablename__ = "explanation_records"

    seq: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True, nullable=False)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    model_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    leaf_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    leaf_index: Mapped[int | None] = mapped_column(SeqInt, nullable=True, unique=True)
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    chunk_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """A batch job row's record is stored in its chunk (``audit_chunks``), not in ``body``: these name the
    chunk and where its stored bytes lie in the chunk's (uncompressed) bytes."""
    chunk_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    chunk_length: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AuditHeadRow(Base):
    """The log's tree size and root (hex) as last integrated; its one row is the lock integrators take."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(SeqInt, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditTreeRow(Base):
    """A stored hash of the log's Merkle tree at tlog's ``stored_hash_index`` (leaf hashes and the hashes of
    every complete subtree)."""

    __tablename__ = "audit_tree"

    index: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class AuditCheckpointRow(Base):
    """A signed checkpoint (C2SP tlog-checkpoint note) of the tree at ``tree_size``."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(SeqInt, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64), nullable=False)
    note: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class AuditChunkRow(Base):
    """A batch job chunk's rows, stored once: one line per row (its record's stored bytes, or its error
    line), zstd-compressed, under the sha256 of the uncompressed bytes. The job's result and the audit log
    read the same bytes."""

    __tablename__ = "audit_chunks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    """Bytes before compression."""
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    has_refs: Mapped[bool] = mapped_column(Boolean, nullable=False)
    """Whether some record in it refers to blobs (attention weights)."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class JobChunkRow(Base):
    """Which stored chunk holds chunk ``chunk`` of a job's rows."""

    __tablename__ = "job_chunks"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)


class JobInputRow(Base):
    """Chunk ``chunk`` of a job's input rows as an Arrow IPC stream (zstd), deleted once the job ends."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    rows: Mapped[int] = mapped_column(Integer, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class AuditPartRow(Base):
    """What many version 2 records share (a model reference, method parameters, library versions, request
    options), stored once under the sha256 of its canonical JSON; records name it by that digest."""

    __tablename__ = "audit_parts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class AuditBlobRow(Base):
    """A content-addressed blob an explanation record refers to (big attention weights, kept out of the
    record's body): its key is the sha256 of its bytes, and the record's hash covers that key."""

    __tablename__ = "audit_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class ExplainKeyRow(Base):
    """An ``Idempotency-Key`` an API key sent with an explanation request: the sha256 of that request and
    the record its answer was recorded as (committed in the record's transaction, deleted with it)."""

    __tablename__ = "explain_idempotency"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    record_id: Mapped[str] = mapped_column(String(36), nullable=False, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)


class JobRow(Base):
    """A batch explanation job: its request, where its rows stand, and which runner holds it. Its input rows
    are in ``job_inputs`` and its results in ``job_chunks``; ``chunks_done`` counts the chunks whose results
    and audit records are committed (always a prefix of the job)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_key_idempotency", "key_id", "idempotency_key", unique=True),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    model_name: Mapped[str] = mapped_column(String(64), nullable=False)
    model_version: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    source: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    total_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    chunk_rows: Mapped[int] = mapped_column(Integer, nullable=False)
    chunks_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    errors: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    runner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """The submitting key's ``Idempotency-Key`` (unique per key) and the sha256 of its request."""
    request_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

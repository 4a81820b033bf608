"""Batch jobs in the database.

A job row says where the job stands; its input rows are stored with it (``model_store.job_inputs``: one
compressed Arrow chunk per row, normalised at submission; deleted once the job ends), and each committed
chunk's rows are stored once (``job_chunks`` names the chunk of ``audit_chunks`` holding them; jobs run
before that kept ``chunks/<n>.jsonl`` files, still read). Nothing a runner needs is on one host's disk. A
runner claims a job (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: the database's single write lock, taken
first), keeps its heartbeat fresh, and commits each chunk's progress in the transaction that also stores the
chunk and its audit records. ``chunks_done`` is therefore always a prefix of the job that is fully
committed; a runner that dies leaves the job to be reclaimed once its heartbeat is stale, and the next
runner resumes at ``chunks_done``.

    queued -> running -> succeeded | failed
       \\          \\-> cancelled   (DELETE; the runner stops at the next chunk)
        \\-> cancelled
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from model_store import job_inputs
from model_store.errors import Conflict, IdempotencyKeyTaken, NotFound
from model_store.tables import JobChunkRow, JobRow, as_utc, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
MAX_ATTEMPTS = 5
"""A job whose runners died this many times is failed instead of being claimed again."""


class LostJob(Exception):
    """The runner no longer holds the job: it was cancelled, or reclaimed by another runner."""


@dataclasses.dataclass(frozen=True)
class NewJob:
    model_name: str
    model_version: int
    kind: str
    options: dict[str, Any]
    source: dict[str, Any]
    key_id: str | None
    total_rows: int
    chunk_rows: int
    idempotency_key: str | None = None
    request_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class ChunkProgress:
    """What committing one chunk adds to the job."""

    chunk: int
    rows: int
    errors: int


def chunk_count(total_rows: int, chunk_rows: int) -> int:
    return max(1, -(-total_rows // chunk_rows))


def job_dict(row: JobRow) -> dict[str, Any]:
    """A job row as plain data (times in UTC)."""

    def when(value: dt.datetime | None) -> dt.datetime | None:
        return as_utc(value) if value is not None else None

    return {
        "id": row.id,
        "status": row.status,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "kind": row.kind,
        "options": row.options,
        "source": row.source,
        "key_id": row.key_id,
        "total_rows": row.total_rows,
        "chunk_rows": row.chunk_rows,
        "chunks_total": chunk_count(row.total_rows, row.chunk_rows),
        "chunks_done": row.chunks_done,
        "rows_done": row.rows_done,
        "errors": row.errors,
        "summary": row.summary,
        "error": row.error,
        "runner_id": row.runner_id,
        "heartbeat_at": when(row.heartbeat_at),
        "attempts": row.attempts,
        "created_at": when(row.created_at),
        "started_at": when(row.started_at),
        "finished_at": when(row.finished_at),
        "idempotency_key": row.idempotency_key,
        "request_sha256": row.request_sha256,
    }


class JobFiles:
    """This host's job files under ``<data_dir>/jobs``: the staging file a submission normalises its rows in,
    the result Parquet file cached for downloads, and what jobs of earlier releases kept there (an input file,
    chunk files)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.root / str(uuid.UUID(job_id))  # never a path from user input

    def input_path(self, job_id: str) -> Path:
        """Where a job queued before inputs were stored in the database keeps its rows."""
        return self.job_dir(job_id) / "input.parquet"

    def chunk_path(self, job_id: str, chunk: int) -> Path:
        """Where a job run before chunks were stored in the database kept chunk ``chunk``'s lines."""
        return self.job_dir(job_id) / "chunks" / f"{int(chunk)}.jsonl"

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A private directory for a submission's normalised rows, removed afterwards."""
        staging = self.root / f".staging-{uuid.uuid4()}"
        staging.mkdir(parents=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class JobStore:
    def __init__(self, sessions: sessionmaker[Session], data_dir: Path) -> None:
        self.sessions = sessions
        self.files = JobFiles(data_dir)

    # -- submission and reading ---------------------------------------------------------------------------
    def create(self, new: NewJob, input_path: Path) -> dict[str, Any]:
        """Queue the job with the rows of ``input_path`` (Parquet, one row group per chunk) as its input;
        ``IdempotencyKeyTaken`` when its key already named another job of the same key."""
        chunks = job_inputs.encode(input_path)
        try:
            return self._insert(str(uuid.uuid4()), new, chunks)
        except IntegrityError as exc:
            if new.idempotency_key is not None and self.by_idempotency_key(new.key_id, new.idempotency_key):
                raise IdempotencyKeyTaken(new.idempotency_key) from exc
            raise

    def by_idempotency_key(self, key_id: str | None, idempotency_key: str) -> dict[str, Any] | None:
        """The job ``key_id`` submitted with ``idempotency_key``, if any."""
        with self.sessions() as session:
            row = session.scalars(
                select(JobRow)
                .where(JobRow.key_id == key_id, JobRow.idempotency_key == idempotency_key)
                .order_by(JobRow.created_at)  # the first (only a key-less caller can have two)
            ).first()
            return job_dict(row) if row is not None else None

    def _insert(self, job_id: str, new: NewJob, chunks: list[job_inputs.InputChunk]) -> dict[str, Any]:
        with self.sessions.begin() as session:
            job_inputs.store(session, job_id, chunks)
            row = JobRow(
                id=job_id,
                status=QUEUED,
                **dataclasses.asdict(new),
                chunks_done=0,
                rows_done=0,
                errors=0,
                summary={},
                attempts=0,
                created_at=utcnow(),
            )
            session.add(row)
            session.flush()
            return job_dict(row)

    def input_chunk(self, job_id: str, chunk: int) -> bytes:
        """Chunk ``chunk`` of the job's input rows (``model_store.job_inputs``)."""
        with self.sessions() as session:
            return job_inputs.read(session, job_id, chunk, self.files.input_path(job_id))

    def has_input(self, job_id: str) -> bool:
        with self.sessions() as session:
            return job_inputs.has_input(session, job_id) or self.files.input_path(job_id).exists()

    def adopt_local_inputs(self) -> int:
        """Store the input files of this host's unfinished jobs queued by an earlier release (which kept them
        on disk) with their jobs, so any host's runner can run them; how many were stored."""
        with self.sessions() as session:
            unfinished = session.scalars(select(JobRow.id).where(JobRow.status.in_((QUEUED, RUNNING)))).all()
        adopted = 0
        for job_id in unfinished:
            path = self.files.input_path(job_id)
            if not path.is_file():
                continue
            try:
                with self.sessions.begin() as session:
                    if not job_inputs.has_input(session, job_id):
                        job_inputs.store(session, job_id, job_inputs.encode(path))
                        adopted += 1
            except IntegrityError:
                continue  # another runner of this host stored it first
            path.unlink(missing_ok=True)
        return adopted

    def discard_input(self, job_id: str) -> None:
        """Delete an ended job's input rows: its results and audit records stand without them, and a model
        with ``store_inputs: hash`` must not keep the inputs."""
        with self.sessions.begin() as session:
            job_inputs.discard(session, job_id)
        self.files.input_path(job_id).unlink(missing_ok=True)

    def get(
        self,
        job_id: str,
        key_id: str | None = None,
        admin: bool = True,
        models: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """The job, or ``NotFound`` when it does not exist, (unless ``admin``) belongs to another key, or
        explains a model outside ``models`` (the caller's allowlist; None: every model)."""
        if not _is_uuid(job_id):
            raise NotFound(f"No job '{job_id}'.")
        with self.sessions() as session:
            row = session.get(JobRow, job_id)
            if row is None or (not admin and row.key_id != key_id):
                raise NotFound(f"No job '{job_id}'.")
            if models is not None and row.model_name not in models:
                raise NotFound(f"No job '{job_id}'.")
            return job_dict(row)

    def cancel(
        self,
        job_id: str,
        key_id: str | None = None,
        admin: bool = True,
        models: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Cancel a queued or running job (a running one stops at its next chunk); cancelling a cancelled
        job is a no-op; a finished one is a ``Conflict``. Who may see it: as for ``get``."""
        self.get(job_id, key_id, admin, models)
        done = 0
        for status in (QUEUED, RUNNING):
            with self.sessions.begin() as session:
                done = _changed(
                    session,
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.status == status)
                    .values(status=CANCELLED, finished_at=utcnow()),
                )
            if done:
                self.discard_input(job_id)  # a running job's runner stops at its next chunk
                break
        job = self.get(job_id)
        if not done and job["status"] != CANCELLED:
            raise Conflict(f"Job '{job_id}' has already {job['status']}.")
        return job

    # -- runners ------------------------------------------------------------------------------------------
    def claim(self, runner_id: str, stale_seconds: float) -> dict[str, Any] | None:
        """Take the oldest queued job, or a running one whose runner's heartbeat is older than
        ``stale_seconds``; None when there is none. Exactly one runner gets a given job."""
        now = utcnow()
        cutoff = now - dt.timedelta(seconds=stale_seconds)
        claimable = or_(
            JobRow.status == QUEUED,
            (JobRow.status == RUNNING) & (JobRow.heartbeat_at < cutoff),
        )
        given_up: list[str] = []
        job = self._claim(runner_id, claimable, now, given_up)
        for job_id in given_up:  # committed as failed
            self.discard_input(job_id)
        return job

    def _claim(
        self, runner_id: str, claimable: Any, now: dt.datetime, given_up: list[str]
    ) -> dict[str, Any] | None:
        with self.sessions.begin() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            query = select(JobRow).where(claimable).order_by(JobRow.created_at).limit(1)
            if postgres:
                query = query.with_for_update(skip_locked=True)
            else:
                # SQLite has one writer: take the write lock before reading, so no other claimer can read
                # the same queued row until this transaction ends.
                session.execute(update(JobRow).where(JobRow.id == "").values(status=JobRow.status))
            while (row := session.scalar(query)) is not None:
                if row.attempts < MAX_ATTEMPTS:
                    row.status = RUNNING
                    row.runner_id = runner_id
                    row.heartbeat_at = now
                    row.attempts += 1
                    row.started_at = row.started_at or now
                    session.flush()
                    return job_dict(row)
                row.status = FAILED
                row.error = f"Its runner stopped {row.attempts} times without finishing it."
                row.finished_at = now
                session.flush()
                given_up.append(row.id)
        return None

    @staticmethod
    def add_chunk(session: Session, job_id: str, chunk: int, sha256: str, rows: int) -> None:
        """Within the caller's transaction (the chunk's commit), note which stored chunk holds its rows."""
        session.add(JobChunkRow(job_id=job_id, chunk=chunk, sha256=sha256, rows=rows))

    def chunk_digests(self, job_id: str) -> list[str]:
        """The stored chunks of a job's committed chunks, in order (none for a job run before they were
        stored so: its rows are in its chunk files)."""
        with self.sessions() as session:
            query = select(JobChunkRow.sha256).where(JobChunkRow.job_id == job_id).order_by(JobChunkRow.chunk)
            return list(session.scalars(query).all())

    def heartbeat(self, job_id: str, runner_id: str) -> bool:
        """Refresh the job's heartbeat; False when this runner no longer holds it."""
        return self._update_held(job_id, runner_id, {"heartbeat_at": utcnow()})

    def advance(
        self, session: Session, job_id: str, runner_id: str, progress: ChunkProgress, summary: dict[str, Any]
    ) -> None:
        """Within the caller's transaction, record chunk ``progress.chunk`` as done (this also takes the job
        row's lock, or SQLite's write lock); ``LostJob`` when this runner no longer holds the job or the
        chunk is not the next one."""
        moved = _changed(
            session,
            update(JobRow)
            .where(
                JobRow.id == job_id,
                JobRow.runner_id == runner_id,
                JobRow.status == RUNNING,
                JobRow.chunks_done == progress.chunk,
            )
            .values(
                chunks_done=JobRow.chunks_done + 1,
                rows_done=JobRow.rows_done + progress.rows,
                errors=JobRow.errors + progress.errors,
                summary=summary,
                heartbeat_at=utcnow(),
            ),
        )
        if not moved:
            raise LostJob(job_id)

    def finish(self, job_id: str, runner_id: str, status: str, error: str | None = None) -> bool:
        """Mark a held job succeeded or failed; False when the runner no longer holds it."""
        now = utcnow()
        values = {"status": status, "error": error, "finished_at": now, "heartbeat_at": now}
        return self._update_held(job_id, runner_id, values)

    def release(self, job_id: str, runner_id: str) -> bool:
        """Give a held job back to the queue (a runner shutting down): the next runner resumes it at once."""
        values = {"status": QUEUED, "runner_id": None, "heartbeat_at": None, "attempts": JobRow.attempts - 1}
        return self._update_held(job_id, runner_id, values)

    def _update_held(self, job_id: str, runner_id: str, values: dict[str, Any]) -> bool:
        """Set ``values`` on the job if ``runner_id`` still holds it running; whether it did."""
        with self.sessions.begin() as session:
            held = update(JobRow).where(
                JobRow.id == job_id, JobRow.runner_id == runner_id, JobRow.status == RUNNING
            )
            return bool(_changed(session, held.values(values)))


def _changed(session: Session, statement: Any) -> int:
    """Rows an UPDATE changed."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def queued_count(sessions: sessionmaker[Session]) -> int:
    """Jobs waiting for a runner."""
    with sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == QUEUED)) or 0
        )

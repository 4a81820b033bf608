"""A job's input rows in the database, one row per chunk as a compressed Arrow IPC stream: any host's runner
reads chunk ``n`` with one small query and sends it to a worker as it is; no host needs another's disk.

Submission normalises the upload into a local Parquet file first (``api.jobs.inputs``: streamed, one row
group per chunk), then stores its row groups here in the job's own transaction. A job queued before inputs
were stored so still has ``<data_dir>/jobs/<id>/input.parquet``; it is read from there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from model_store.errors import IntegrityError
from model_store.tables import JobInputRow

IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def to_ipc(table: pa.Table) -> bytes:
    """``table`` as one Arrow IPC stream, compressed."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=IPC_OPTIONS) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def rows_of(data: bytes) -> list[dict[str, Any]]:
    """The rows of an IPC chunk as ``{column: value}`` with Python values (missing values are None)."""
    return pa.ipc.open_stream(data).read_all().to_pylist()  # type: ignore[no-any-return]


def _row_groups(path: Path) -> Iterator[tuple[int, pa.Table]]:
    parquet = pq.ParquetFile(path)
    for chunk in range(parquet.num_row_groups):
        yield chunk, parquet.read_row_group(chunk)


def store(session: Session, job_id: str, path: Path) -> None:
    """Within the caller's transaction, the input Parquet file's row groups as the job's input chunks."""
    for chunk, table in _row_groups(path):
        session.add(JobInputRow(job_id=job_id, chunk=chunk, rows=table.num_rows, data=to_ipc(table)))
        session.flush()  # one chunk's bytes in memory at a time


def read(session: Session, job_id: str, chunk: int, legacy: Path) -> bytes:
    """Chunk ``chunk`` of the job's input (from ``legacy``, its Parquet file, when none is stored)."""
    data = session.scalar(
        select(JobInputRow.data).where(JobInputRow.job_id == job_id, JobInputRow.chunk == chunk)
    )
    if data is not None:
        return bytes(data)
    try:
        return to_ipc(pq.ParquetFile(legacy).read_row_group(chunk))
    except (FileNotFoundError, IndexError) as exc:
        raise IntegrityError(f"Chunk {chunk} of job {job_id}'s input is missing.") from exc


def has_input(session: Session, job_id: str) -> bool:
    query = select(JobInputRow.chunk).where(JobInputRow.job_id == job_id).limit(1)
    return session.scalar(query) is not None


def discard(session: Session, job_id: str) -> None:
    session.execute(delete(JobInputRow).where(JobInputRow.job_id == job_id))

"""A job's input rows in the database, one row per chunk as a compressed Arrow IPC stream: any host's runner
reads chunk ``n`` with one small query and sends it to a worker as it is; no host needs another's disk.

Submission normalises the upload into a local Parquet file first (``api.jobs.inputs``: streamed, one row
group per chunk), encodes its row groups, then stores them in the job's own transaction. A job queued before
inputs were stored so has ``<data_dir>/jobs/<id>/input.parquet``: the runners of its host store it here
when they start (``JobStore.adopt_local_inputs``), and until then it is read from there."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
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


@dataclasses.dataclass(frozen=True)
class InputChunk:
    chunk: int
    rows: int
    data: bytes


def encode(path: Path) -> list[InputChunk]:
    """The input Parquet file's row groups as compressed chunks, encoded before the job's transaction (on
    SQLite it holds the one write lock): their bytes are about the upload's compressed size."""
    parquet = pq.ParquetFile(path)
    encoded = []
    for chunk in range(parquet.num_row_groups):
        table = parquet.read_row_group(chunk)
        encoded.append(InputChunk(chunk, table.num_rows, to_ipc(table)))
    return encoded


def store(session: Session, job_id: str, chunks: Iterable[InputChunk]) -> None:
    """Within the caller's transaction, ``chunks`` as the job's input."""
    for item in chunks:
        session.add(JobInputRow(job_id=job_id, chunk=item.chunk, rows=item.rows, data=item.data))
    session.flush()


def read(session: Session, job_id: str, chunk: int, legacy: Path) -> bytes:
    """Chunk ``chunk`` of the job's input (from ``legacy``, its Parquet file, when none is stored)."""
    data = session.scalar(
        select(JobInputRow.data).where(JobInputRow.job_id == job_id, JobInputRow.chunk == chunk)
    )
    if data is not None:
        return bytes(data)
    try:
        return to_ipc(pq.ParquetFile(legacy).read_row_group(chunk))
    except (FileNotFoundError, IndexError, pa.ArrowInvalid) as exc:
        raise IntegrityError(f"Chunk {chunk} of job {job_id}'s input is missing.") from exc


def has_input(session: Session, job_id: str) -> bool:
    query = select(JobInputRow.chunk).where(JobInputRow.job_id == job_id).limit(1)
    return session.scalar(query) is not None


def discard(session: Session, job_id: str) -> None:
    session.execute(delete(JobInputRow).where(JobInputRow.job_id == job_id))

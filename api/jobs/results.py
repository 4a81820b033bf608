"""A finished job's results in other forms than its JSON lines (built once, from the lines, in a stream)."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from model_store.errors import IntegrityError
from model_store.jobs import JobFiles

PARQUET_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("status", pa.string()),
        ("explanation_id", pa.string()),
        ("result", pa.string()),
        ("error", pa.string()),
    ]
)
"""``result`` and ``error`` hold JSON text: their shapes differ by kind and row."""


def check_chunks(files: JobFiles, job_id: str, chunks: int) -> None:
    """Every committed chunk's file is there (else the stored job is damaged)."""
    if not all(files.chunk_path(job_id, chunk).is_file() for chunk in range(chunks)):
        raise IntegrityError("A stored chunk of this job's results is missing.")


def parquet_result(files: JobFiles, job_id: str, chunks: int) -> Path:
    """``result.parquet`` beside the chunks, one row group per chunk, written on first request."""
    path = files.job_dir(job_id) / "result.parquet"
    if path.is_file():
        return path
    check_chunks(files, job_id, chunks)
    temporary = path.with_name(f".result.{uuid.uuid4().hex}.tmp")
    try:
        with pq.ParquetWriter(temporary, PARQUET_SCHEMA) as writer:
            for chunk in range(chunks):
                columns: dict[str, list[object]] = {name: [] for name in PARQUET_SCHEMA.names}
                with files.chunk_path(job_id, chunk).open("rb") as handle:
                    for raw in handle:
                        line = orjson.loads(raw)
                        columns["row"].append(line["row"])
                        columns["status"].append(line["status"])
                        columns["explanation_id"].append(line.get("explanation_id"))
                        columns["result"].append(_json(line.get("result")))
                        columns["error"].append(_json(line.get("error")))
                writer.write_table(pa.table(columns, schema=PARQUET_SCHEMA))
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()

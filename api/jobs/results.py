"""A finished job's result lines, read from the chunks its rows are stored in; the same as a Parquet file.

A job's rows are stored once (``model_store.audit_chunks``): an explained row as its audit record, a failed
row as its error line. A row's result line is read from its record: ``{"row", "status": "ok",
"explanation_id", "result"}`` with the record's one result (attention weights read back from their blobs, in
the encoding the job asked for), as the runner's workers made it. Jobs run before chunks were stored so kept
their lines in ``chunks/<n>.jsonl`` files, which are read as they are.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from api.service.jsonbytes import dumps_bytes
from api.service.recording import with_recorded_arrays
from model_store.array_codec import as_sent
from model_store.audit_chunks import REF_MARK, lines
from model_store.errors import IntegrityError
from model_store.jobs import JobFiles, JobStore, chunk_count
from model_store.store import Store

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


class JobResults:
    """The result lines of a finished job (``job``: as ``JobStore.get`` reads it), chunk by chunk."""

    def __init__(self, store: Store, jobs: JobStore, job: dict[str, Any]) -> None:
        job_id, chunks = job["id"], chunk_count(job["total_rows"], job["chunk_rows"])
        self.store, self.files, self.job_id, self.chunks = store, jobs.files, job_id, chunks
        self.digests = jobs.chunk_digests(job_id)
        options = job["options"]
        self.params = {"encoding": options.get("encoding"), "dtype": options.get("dtype")}
        """How the job asked for weights arrays (attention) to be encoded."""
        if not self.digests:
            check_files(self.files, job_id, chunks)
        elif len(self.digests) != chunks:
            raise IntegrityError("A stored chunk of this job's results is missing.")

    def by_chunk(self) -> Iterator[list[dict[str, Any]]]:
        """Each chunk's result lines, in row order."""
        if not self.digests:
            for chunk in range(self.chunks):
                with self.files.chunk_path(self.job_id, chunk).open("rb") as handle:
                    yield [orjson.loads(raw) for raw in handle]
            return
        for digest in self.digests:
            with self.store.sessions() as session:
                raw = self.store.audit.chunks.get(session, digest)
            yield [self._line(line) for line in lines(raw)]

    def _line(self, stored: bytes) -> dict[str, Any]:
        entry = orjson.loads(stored)
        if "explanation" not in entry:
            return dict(entry)  # a failed row's line, stored as it is
        envelope = entry["explanation"]
        result = envelope["results"][0]
        if REF_MARK in stored:
            record = {"explanation": {"results": [result]}}  # a job row keeps its weights' blobs
            arrays = with_recorded_arrays(self.store.sessions, record, None)
            result = as_sent({**arrays, "method": {"params": self.params}})["results"][0]
        return {
            "row": entry["source"]["row"],
            "status": "ok",
            "explanation_id": envelope["id"],
            "result": result,
        }

    def json_lines(self) -> Iterator[bytes]:
        """The result as JSON lines, a chunk per block."""
        for chunk in self.by_chunk():
            yield b"".join(dumps_bytes(line) + b"\n" for line in chunk)


def check_files(files: JobFiles, job_id: str, chunks: int) -> None:
    """Every committed chunk's file is there (else the stored job is damaged)."""
    if not all(files.chunk_path(job_id, chunk).is_file() for chunk in range(chunks)):
        raise IntegrityError("A stored chunk of this job's results is missing.")


def parquet_result(results: JobResults) -> Path:
    """``result.parquet`` in the job's directory, one row group per chunk, written on first request."""
    path = results.files.job_dir(results.job_id) / "result.parquet"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".result.{uuid.uuid4().hex}.tmp")
    try:
        with pq.ParquetWriter(temporary, PARQUET_SCHEMA) as writer:
            for chunk in results.by_chunk():
                columns: dict[str, list[object]] = {name: [] for name in PARQUET_SCHEMA.names}
                for line in chunk:
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

"""A batch job's rows are stored once: each chunk's records and error lines compressed together in the
database, the job's result read from the same bytes, each row still its own provable leaf; a damaged or
purged chunk is found, not served.

The oracles: the explain endpoint for the results (test_jobs.py checks that), the leaf hash recomputed from
each exported row's stored bytes, and the stored chunk decompressed and hashed independently."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

import orjson
import pyarrow as pa
import sqlalchemy as sa
from flask import Flask
from test_jobs import (  # noqa: F401 (dask_client: a fixture)
    bearer,
    dask_client,
    loan_rows,
    parquet_bytes,
    result_lines,
    run_jobs,
    submit_file,
)

from candor_verify import merkle
from model_store.audit_blobs import verify_trail
from model_store.jobs import JobFiles
from model_store.tables import utcnow


def _job(app: Flask, dask_client: Any, rows: int = 25) -> tuple[str, str, list[dict[str, Any]]]:  # noqa: F811
    """A finished SHAP job of ``rows`` rows in chunks of 10, its row 4 failing."""
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("jobs", ["explain", "audit:read"])[0]
    frame = loan_rows(rows)
    frame.loc[4, "purpose"] = "spaceship"
    submitted = submit_file(client, token, parquet_bytes(frame), filename="rows.parquet")
    assert submitted.status_code == 202, submitted.data
    job_id = submitted.get_json()["id"]
    assert run_jobs(app, dask_client) == 1
    return job_id, token, result_lines(client, token, job_id)


def _rows(app: Flask, statement: str, **params: Any) -> list[Any]:
    with app.extensions["candor"].store.engine.connect() as connection:
        return list(connection.execute(sa.text(statement), params))


def test_a_jobs_rows_are_stored_once_and_its_result_read_from_them(make_app: Any, dask_client: Any) -> None:  # noqa: F811
    app = make_app(job_chunk_rows=10)
    job_id, _, lines = _job(app, dask_client)
    assert [line["row"] for line in lines] == list(range(25))
    assert lines[4]["status"] == "error" and "purpose" in lines[4]["error"]["errors"]
    chunks = _rows(
        app, "SELECT chunk, sha256, rows FROM job_chunks WHERE job_id = :j ORDER BY chunk", j=job_id
    )
    assert [(c.chunk, c.rows) for c in chunks] == [(0, 10), (1, 10), (2, 5)]
    files = JobFiles(app.extensions["candor"].settings.data_dir)
    assert not list(files.job_dir(job_id).glob("chunks/*.jsonl")), "no second copy of the rows on disk"
    stored_lines = []
    for chunk in chunks:  # each chunk decompressed and hashed here, independently of the store's code
        [stored] = _rows(app, "SELECT size, data FROM audit_chunks WHERE sha256 = :s", s=chunk.sha256)
        raw = pa.decompress(bytes(stored.data), decompressed_size=stored.size, codec="zstd", asbytes=True)
        assert hashlib.sha256(raw).hexdigest() == chunk.sha256
        stored_lines += raw.splitlines()
    assert len(stored_lines) == 25
    records = _rows(
        app,
        "SELECT id, body, chunk_sha256, chunk_offset, chunk_length, leaf_hash FROM explanation_records "
        "WHERE chunk_sha256 IS NOT NULL ORDER BY seq",
    )
    assert len(records) == 24 and all(r.body is None for r in records)
    by_id = {r.id: r for r in records}
    for row, line in enumerate(lines):
        stored = orjson.loads(stored_lines[row])
        if line["status"] == "error":
            assert stored == line  # the error line, stored as it is: not a record
            continue
        record = by_id[line["explanation_id"]]
        assert merkle.leaf_hash(stored_lines[row]).hex() == record.leaf_hash
        assert stored["source"] == {"type": "job", "job_id": job_id, "row": row}
        assert stored["explanation"]["results"] == [line["result"]]


def test_job_rows_are_leaves_an_auditor_recomputes_from_the_export(make_app: Any, dask_client: Any) -> None:  # noqa: F811
    app = make_app(job_chunk_rows=10)
    job_id, token, lines = _job(app, dask_client, rows=12)
    export = app.test_client().get("/v1/explanations/export", headers=bearer(token))
    exported = [json.loads(line) for line in export.get_data(as_text=True).splitlines()]
    records = [line for line in exported if "record" in line]
    assert len(records) == 11 and [r["leaf_index"] for r in records] == list(range(11))
    leaves = []
    for line in records:
        stored = base64.b64decode(line["stored"])
        assert base64.b64decode(line["leaf_hash"]) == merkle.leaf_hash(stored)
        assert orjson.loads(stored)["source"]["job_id"] == job_id
        leaves.append(merkle.leaf_hash(stored))
    assert app.extensions["candor"].store.audit_log.head()["root"] == merkle.root(leaves).hex()
    one = next(line for line in lines if line["status"] == "ok")
    proof = app.test_client().get(f"/v1/explanations/{one['explanation_id']}/proof", headers=bearer(token))
    assert proof.status_code == 200 and proof.get_json()["tree_size"] == 11


def test_a_damaged_chunk_is_found_by_the_verifier_and_never_served(make_app: Any, dask_client: Any) -> None:  # noqa: F811
    app = make_app(job_chunk_rows=10)
    job_id, token, _ = _job(app, dask_client, rows=12)
    store = app.extensions["candor"].store
    [chunk] = _rows(app, "SELECT sha256, size, data FROM audit_chunks ORDER BY created_at LIMIT 1")
    raw = bytearray(
        pa.decompress(bytes(chunk.data), decompressed_size=chunk.size, codec="zstd", asbytes=True)
    )
    at = raw.index(b'"attribution":') + len(b'"attribution":') + 1
    raw[at] = ord("7") if raw[at] != ord("7") else ord("8")  # one digit of one attribution
    damaged = pa.compress(bytes(raw), codec="zstd", asbytes=True)
    with store.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE audit_chunks SET data = :d WHERE sha256 = :s"), {"d": damaged, "s": chunk.sha256}
        )
    store.audit.chunks = type(store.audit.chunks)()  # a fresh process's cache
    verdict = verify_trail(store.audit_log)
    assert verdict["ok"] is False and "does not match its sha256" in verdict["first_break"]["reason"]
    answer = app.test_client().get(f"/v1/jobs/{job_id}/result", headers=bearer(token))
    assert answer.status_code == 500 and answer.mimetype == "application/problem+json"


def test_purging_a_jobs_records_deletes_its_chunks_and_keeps_their_leaves(
    make_app: Any,
    dask_client: Any,  # noqa: F811
) -> None:
    app = make_app(job_chunk_rows=10)
    _job(app, dask_client, rows=12)
    store = app.extensions["candor"].store
    store.audit_log.integrate()
    root = store.audit_log.head()["root"]
    assert store.audit.purge(utcnow() + dt.timedelta(seconds=1)) == {"purged": 11, "chunks": 2}
    assert _rows(app, "SELECT count(*) AS n FROM audit_chunks")[0].n == 0
    assert store.audit_log.integrate() == 11 and store.audit_log.head()["root"] == root
    assert verify_trail(store.audit_log)["ok"] is True

"""A streamed export that fails ends visibly: before the first byte, a problem document with its status; after
it, a last line in the stream's own format (JSON Lines or CSV) and a JSON log line with the traceback. The
failure is real: a record whose stored body is no longer JSON."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import bearer
from flask import Flask
from sqlalchemy import update

from model_store.audit import RecordDraft
from model_store.jobs import SUCCEEDED, JobStore, NewJob
from model_store.tables import JobRow, RecordRow

PROBLEM = "application/problem+json"


def draft(index: int) -> RecordDraft:
    return RecordDraft(
        id=f"rec-{index}",
        kind="shap",
        model_name="loan",
        model_version=1,
        key_id="k1",
        status="ok",
        content={"explanation": {"value": index}, "request": {"options": {}, "instances": [index]}},
    )


def corrupt(app: Flask, seq: int) -> None:
    """Three records; the body of record ``seq`` made undecodable in the database."""
    store = app.extensions["candor"].store
    store.audit.append([draft(1), draft(2), draft(3)])
    with store.sessions.begin() as session:
        session.execute(update(RecordRow).where(RecordRow.seq == seq).values(body="{not json"))


def logged(err: str, logger: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == logger]


def check_problem(problem: dict[str, Any], request_id: str) -> None:
    assert problem["status"] == 500 and problem["title"] == "Internal Server Error"
    assert problem["instance"] == "/v1/explanations/export" and problem["request_id"] == request_id
    assert "JSONDecode" not in json.dumps(problem), "no library text reaches the client"


def test_a_jsonl_export_failing_midway_ends_with_an_error_line(
    app: Flask, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt(app, 2)
    capsys.readouterr()
    headers = {**bearer(keys["audit:read"]), "X-Request-ID": "stream-1"}
    response = app.test_client().get("/v1/explanations/export", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in response.get_data(as_text=True).splitlines()]
    assert [line["record"]["id"] for line in lines[:-1]] == ["rec-1"]
    assert list(lines[-1]) == ["error"]
    check_problem(lines[-1]["error"], "stream-1")
    [entry] = logged(capsys.readouterr().err, "candor.stream")
    assert entry["level"] == "ERROR" and entry["request_id"] == "stream-1"
    assert "JSONDecodeError" in entry["exception"]


def test_a_csv_export_failing_midway_ends_with_a_marker_row(
    app: Flask, keys: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt(app, 3)
    headers = {**bearer(keys["audit:read"]), "X-Request-ID": "stream-2"}
    response = app.test_client().get("/v1/explanations/export?format=csv", headers=headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0][:2] == ["seq", "id"]
    assert [row[1] for row in rows[1:-1]] == ["rec-1", "rec-2"]
    marker, document = rows[-1]
    assert marker == "#error"
    check_problem(json.loads(document), "stream-2")
    assert len(logged(capsys.readouterr().err, "candor.stream")) == 1


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_failing_before_its_first_byte_is_a_problem_document(
    app: Flask, keys: dict[str, str], capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    corrupt(app, 1)
    headers = {**bearer(keys["audit:read"]), "X-Request-ID": "stream-3"}
    response = app.test_client().get(f"/v1/explanations/export?format={fmt}", headers=headers)
    assert response.status_code == 500 and response.mimetype == PROBLEM
    check_problem(response.get_json(), "stream-3")
    [entry] = logged(capsys.readouterr().err, "candor.errors")
    assert "JSONDecodeError" in entry["exception"]


def test_a_job_result_stream_failing_midway_ends_with_an_error_line(
    app: Flask, keys: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A succeeded job of two chunks whose second chunk file disappears while the first is being sent."""
    context = app.extensions["candor"]
    jobs = JobStore(context.store.sessions, context.settings.data_dir)
    rows_file = tmp_path / "input.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3, 4]}), rows_file, row_group_size=2)
    new = NewJob("loan", 1, "shap", {}, {"type": "dataset"}, None, total_rows=4, chunk_rows=2)
    job_id = jobs.create(new, rows_file)["id"]
    with context.store.sessions.begin() as session:
        session.execute(update(JobRow).where(JobRow.id == job_id).values(status=SUCCEEDED))
    for chunk in (0, 1):
        path = jobs.files.chunk_path(job_id, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = (json.dumps({"row": 2 * chunk + i, "status": "ok"}) for i in (0, 1))
        path.write_text("".join(row + "\n" for row in rows))
    capsys.readouterr()
    headers = {**bearer(keys["admin"]), "X-Request-ID": "stream-4"}
    response = app.test_client().get(f"/v1/jobs/{job_id}/result", headers=headers, buffered=False)
    assert response.status_code == 200
    body = iter(response.response)
    sent = next(body)
    jobs.files.chunk_path(job_id, 1).unlink()
    sent += b"".join(body)
    response.close()
    lines = [json.loads(line) for line in sent.decode().splitlines()]
    assert [line.get("row") for line in lines[:-1]] == [0, 1]
    assert list(lines[-1]) == ["error"] and lines[-1]["error"]["status"] == 500
    [entry] = logged(capsys.readouterr().err, "candor.stream")
    assert entry["request_id"] == "stream-4" and "FileNotFoundError" in entry["exception"]

"""``Idempotency-Key`` on ``POST /v1/jobs``: a retried submission answers with the job it queued first, never
a second job (whose rows would be explained and recorded twice); the same key with a different request is a
422 naming the header; keys belong to the API key that sent them."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from api.demo import LOAN_TARGET, german_credit
from model_store.errors import IdempotencyKeyTaken
from model_store.jobs import JobStore, NewJob
from model_store.tables import JobRow

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def csv_of(rows: int, start: int = 0) -> bytes:
    frame = german_credit().drop(columns=[LOAN_TARGET]).iloc[start : start + rows]
    return frame.to_csv(index=False).encode()


def post_file(client: FlaskClient, token: str, data: bytes, key: str | None, options: str = "{}") -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers[HEADER] = key
    form = {
        "model": "loan",
        "version": "1",
        "kind": "shap",
        "options": options,
        "file": (io.BytesIO(data), "rows.csv"),
    }
    return client.post("/v1/jobs", data=form, headers=headers, content_type="multipart/form-data")


def job_count(app: Flask) -> int:
    with app.extensions["candor"].store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(JobRow)) or 0)


def test_a_retry_answers_with_the_first_job(app: Flask, keys: dict[str, str]) -> None:
    client = app.test_client()
    first = post_file(client, keys["explain"], csv_of(5), "retry-1")
    assert first.status_code == 202, first.data
    assert REPLAYED not in first.headers
    again = post_file(client, keys["explain"], csv_of(5), "retry-1")
    assert again.status_code == 202, again.data
    assert again.headers[REPLAYED] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert job_count(app) == 1
    same_options = post_file(client, keys["explain"], csv_of(5), "retry-2", '{"layout": "records"}')
    reordered = post_file(client, keys["explain"], csv_of(5), "retry-2", '{ "layout" : "records" }')
    assert reordered.headers[REPLAYED] == "true"
    assert reordered.get_json()["id"] == same_options.get_json()["id"]
    assert job_count(app) == 2
    without = [post_file(client, keys["explain"], csv_of(5), None) for _ in range(2)]
    assert without[0].get_json()["id"] != without[1].get_json()["id"]  # no key: every post is a new job
    quoted = post_file(client, keys["explain"], csv_of(5), '"retry-1"')  # compared as sent: another key
    assert quoted.status_code == 202 and REPLAYED not in quoted.headers
    assert job_count(app) == 5


@pytest.mark.parametrize(
    ("data", "options"),
    [(csv_of(5, start=1), "{}"), (csv_of(6), "{}"), (csv_of(5), '{"layout": "columnar"}')],
    ids=["other-rows", "one-more-row", "other-options"],
)
def test_the_same_key_for_another_request_is_refused(
    app: Flask, keys: dict[str, str], data: bytes, options: str
) -> None:
    client = app.test_client()
    assert post_file(client, keys["explain"], csv_of(5), "k-1").status_code == 202
    refused = post_file(client, keys["explain"], data, "k-1", options)
    assert refused.status_code == 422, refused.data
    assert refused.mimetype == "application/problem+json"
    assert HEADER in refused.get_json()["errors"]
    assert job_count(app) == 1


def test_keys_belong_to_the_api_key_that_sent_them(app: Flask, keys: dict[str, str]) -> None:
    client = app.test_client()
    other = app.extensions["candor"].store.keys.create("another-explainer", ["explain"])[0]
    mine = post_file(client, keys["explain"], csv_of(5), "shared-name")
    theirs = post_file(client, other, csv_of(5), "shared-name")
    assert mine.status_code == theirs.status_code == 202
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert REPLAYED not in theirs.headers


def test_a_refused_request_does_not_use_up_its_key(app: Flask, keys: dict[str, str]) -> None:
    client = app.test_client()
    bad = post_file(client, keys["explain"], csv_of(5), "k-2", '{"layout": "sideways"}')
    assert bad.status_code == 422 and "options.layout" in bad.get_json()["errors"]
    good = post_file(client, keys["explain"], csv_of(5), "k-2")
    assert good.status_code == 202 and REPLAYED not in good.headers


def test_a_race_lost_after_the_lookup_answers_with_the_winner(
    app: Flask, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two identical submissions both find no job under their key, both stage their rows: the database's
    unique index lets the first in; the second leaves nothing behind and answers with the first's job."""
    client = app.test_client()
    first = post_file(client, keys["explain"], csv_of(5), "race-1")
    lookups = []
    real = JobStore.by_idempotency_key

    def not_yet_committed(self: JobStore, key_id: str | None, key: str) -> dict[str, Any] | None:
        lookups.append(key)
        return None if len(lookups) == 1 else real(self, key_id, key)

    monkeypatch.setattr(JobStore, "by_idempotency_key", not_yet_committed)
    second = post_file(client, keys["explain"], csv_of(5), "race-1")
    assert second.status_code == 202, second.data
    assert second.headers[REPLAYED] == "true" and second.get_json()["id"] == first.get_json()["id"]
    assert len(lookups) >= 2 and job_count(app) == 1
    jobs_dir = app.extensions["candor"].settings.data_dir / "jobs"
    assert list(jobs_dir.iterdir()) == [], "no staging file left behind"
    with app.extensions["candor"].store.engine.connect() as connection:
        stored = connection.execute(sa.text("SELECT DISTINCT job_id FROM job_inputs")).scalars().all()
    assert stored == [first.get_json()["id"]], "only the first job's rows are stored"
    lost = post_file(client, keys["explain"], csv_of(5, start=1), "race-1")
    assert lost.status_code == 422 and HEADER in lost.get_json()["errors"]


def test_options_the_fingerprint_cannot_write_are_a_422(app: Flask, keys: dict[str, str]) -> None:
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    headers = {"Authorization": f"Bearer {keys['explain']}", HEADER: "deep-1"}
    body = {"model": "loan", "version": "1", "kind": "shap", "dataset": "reference", "options": {"a": deep}}
    data = json.dumps(body)  # the app's orjson cannot write it either: that is the point
    refused = app.test_client().post("/v1/jobs", data=data, headers=headers, content_type="application/json")
    assert refused.status_code == 422, refused.data
    assert "options" in refused.get_json()["errors"]


def test_dataset_jobs_are_idempotent_too(app: Flask, keys: dict[str, str]) -> None:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {keys['explain']}", HEADER: "dataset-1"}
    body = {"model": "loan", "version": "1", "kind": "shap", "dataset": "reference"}
    first = client.post("/v1/jobs", json=body, headers=headers)
    again = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202, again.data
    assert again.get_json()["id"] == first.get_json()["id"] and again.headers[REPLAYED] == "true"
    other = client.post("/v1/jobs", json={**body, "version": "production"}, headers=headers)
    assert other.status_code == 422 and HEADER in other.get_json()["errors"]


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "tab\there", "caf\u00e9"])
def test_malformed_keys_are_refused(app: Flask, keys: dict[str, str], key: str) -> None:
    refused = post_file(app.test_client(), keys["explain"], csv_of(5), key)
    assert refused.status_code == 422, refused.data
    assert HEADER in refused.get_json()["errors"]
    assert job_count(app) == 0


def test_a_concurrent_duplicate_loses_at_the_database(app: Flask, tmp_path: Path) -> None:
    """Two submissions racing past the lookup: the unique index lets one job in, the other learns which."""
    jobs = JobStore(app.extensions["candor"].store.sessions, app.extensions["candor"].settings.data_dir)
    rows = tmp_path / "input.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3, 4, 5]}), rows)
    new = NewJob("loan", 1, "shap", {}, {"type": "upload"}, "key-a", 5, 5, "race", "0" * 64)
    first = jobs.create(new, rows)
    with pytest.raises(IdempotencyKeyTaken):
        jobs.create(new, rows)
    assert jobs.by_idempotency_key("key-a", "race") == first
    assert jobs.by_idempotency_key("key-b", "race") is None
    # without a key the index does not apply
    plain = NewJob("loan", 1, "shap", {}, {"type": "upload"}, "key-a", 5, 5)
    jobs.create(plain, rows)
    jobs.create(plain, rows)
    assert job_count(app) == 3

"""Batch jobs end to end: submitted over HTTP (multipart CSV or Parquet, or a stored dataset), run by the real
runner on a real Dask LocalCluster, read back over HTTP; results checked against the explain endpoint as
the oracle, the audit trail against the rows, the summaries against the result lines."""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow.parquet as pq
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.demo import LOAN_TARGET, german_credit
from api.jobs.runner import Runner
from api.service.recording import draft_for
from model_store.audit_blobs import verify_trail
from model_store.jobs import JobStore

PROBLEM = "application/problem+json"
DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    from distributed import Client

    from api.jobs.cluster import local_cluster
    from api.settings import Settings

    # the runner's own cluster: no dashboard, so no fight over port 8787 with another test run
    with local_cluster(Settings.load({"dask_workers": 2}, environ={})) as cluster, Client(cluster) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def loan_rows(n: int, start: int = 0) -> pd.DataFrame:
    return german_credit().drop(columns=[LOAN_TARGET]).iloc[start : start + n].reset_index(drop=True)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def submit_file(
    client: FlaskClient,
    token: str,
    data: bytes,
    kind: str = "shap",
    options: dict[str, Any] | None = None,
    model: str = "loan",
    version: str = "1",
    filename: str = "rows.csv",
) -> Any:
    form = {
        "model": model,
        "version": version,
        "kind": kind,
        "options": json.dumps(options or {}),
        "file": (io.BytesIO(data), filename),
    }
    return client.post("/v1/jobs", data=form, headers=bearer(token), content_type="multipart/form-data")


def run_jobs(app: Flask, dask_client: Any, **overrides: Any) -> int:
    context = app.extensions["candor"]
    settings = context.settings
    if overrides:
        import dataclasses

        settings = dataclasses.replace(settings, **overrides)
    return Runner(settings, store=context.store).run(once=True, client=dask_client)


def result_lines(client: FlaskClient, token: str, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/result", headers=bearer(token))
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/x-ndjson"
    return [orjson.loads(line) for line in response.data.splitlines()]


def job_records(app: Flask, job_id: str) -> list[dict[str, Any]]:
    audit = app.extensions["candor"].store.audit
    from model_store.audit import RecordFilter

    return [r for r in audit.stream(RecordFilter()) if r.get("source", {}).get("job_id") == job_id]


def numbers_as_floats(row: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if isinstance(v, int | float) else v for k, v in row.items()}


def attributions(result: dict[str, Any]) -> dict[str, float]:
    return {a["feature"]: a["attribution"] for a in result["attributions"]}


def _worker_gc_state() -> tuple[int, int]:
    import gc

    from api.jobs import compute

    return compute._chunks_seen, gc.get_freeze_count()


def test_workers_freeze_their_heap_from_their_second_chunk(make_app: Any, dask_client: Any) -> None:
    """Like gunicorn workers at start, Dask workers move their loaded model out of the collector's sight."""
    app = make_app(job_chunk_rows=5)
    token = app.extensions["candor"].store.keys.create("jobs", ["explain"])[0]
    assert submit_file(app.test_client(), token, csv_bytes(loan_rows(30))).status_code == 202
    assert run_jobs(app, dask_client) == 1
    states = dask_client.run(_worker_gc_state).values()
    assert any(seen >= 2 for seen, _ in states)  # 6 chunks on 2 workers
    assert all(frozen > 0 for seen, frozen in states if seen >= 2)
    assert all(frozen == 0 for seen, frozen in states if seen < 2)


# -- the main path ---------------------------------------------------------------------------------------
def test_csv_shap_job_equals_the_explain_endpoint(make_app: Any, dask_client: Any) -> None:
    app = make_app(job_chunk_rows=7)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("jobs", ["explain"])[0]
    frame = loan_rows(30)
    submitted = submit_file(client, token, csv_bytes(frame))
    assert submitted.status_code == 202, submitted.data
    job = submitted.get_json()
    assert submitted.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued"
    assert job["progress"] == {
        "rows_done": 0,
        "rows_total": 30,
        "chunks_done": 0,
        "chunks_total": 5,
        "chunk_rows": 7,
        "errors": 0,
    }
    assert client.get(f"/v1/jobs/{job['id']}/result", headers=bearer(token)).status_code == 409

    context = app.extensions["candor"]
    runner = Runner(context.settings, store=context.store)
    assert runner.run(once=True, client=dask_client) == 1
    info = context.store.registry.resolve("loan", 1)
    sent = runner.sent[job["id"]]
    assert (sent.workers, sent.model_bytes) == (2, sum(map(len, context.store.registry.files(info).values())))
    assert sent.rows_bytes > 0 and sent.total == 2 * sent.model_bytes + sent.rows_bytes
    status = client.get(f"/v1/jobs/{job['id']}", headers=bearer(token)).get_json()
    assert status["status"] == "succeeded", status
    assert status["progress"]["rows_done"] == 30 and status["progress"]["chunks_done"] == 5
    jobs = JobStore(app.extensions["candor"].store.sessions, app.extensions["candor"].settings.data_dir)
    assert not jobs.has_input(job["id"]), "a finished job's input rows are deleted"
    assert status["timing"]["finished_at"] is not None and status["timing"]["elapsed_s"] >= 0
    assert status["explanation"]["output"]["space"] == "log_odds"

    lines = result_lines(client, token, job["id"])
    assert [line["row"] for line in lines] == list(range(30))
    assert all(line["status"] == "ok" for line in lines)
    instances = json.loads(frame.to_json(orient="records"))
    oracle = client.post(
        "/v1/models/loan/versions/1/explain/shap", json={"instances": instances}, headers=bearer(token)
    ).get_json()
    for line, expected in zip(lines, oracle["results"], strict=True):
        got = line["result"]
        assert got["prediction"]["label"] == expected["prediction"]["label"]
        assert got["output_value"] == pytest.approx(expected["output_value"], abs=1e-9)
        assert got["base_value"] == pytest.approx(expected["base_value"], abs=1e-9)
        want = attributions(expected)
        assert attributions(got).keys() == want.keys()
        for feature, value in attributions(got).items():
            assert value == pytest.approx(want[feature], abs=1e-9)

    # summaries: mean |attribution| per feature over the result lines
    summary = status["summary"]
    assert summary["rows_ok"] == 30 and summary["rows_error"] == 0
    labels = [line["result"]["prediction"]["label"] for line in lines]
    assert summary["label_counts"] == {label: labels.count(label) for label in set(labels)}
    expected_means = {
        feature: float(np.mean([abs(attributions(line["result"])[feature]) for line in lines]))
        for feature in attributions(lines[0]["result"])
    }
    means = {item["feature"]: item["mean_abs_attribution"] for item in summary["mean_abs_attribution"]}
    assert means.keys() == expected_means.keys()
    for feature, value in means.items():
        assert value == pytest.approx(expected_means[feature], rel=1e-12, abs=1e-15)

    # one audit record per row, linked to the job, chained
    records = job_records(app, job["id"])
    assert len(records) == 30
    assert sorted(r["source"]["row"] for r in records) == list(range(30))
    assert {r["id"] for r in records} == {line["explanation_id"] for line in lines}
    first = next(r for r in records if r["source"]["row"] == 0)
    assert [numbers_as_floats(r) for r in first["request"]["instances"]] == [numbers_as_floats(instances[0])]
    assert first["explanation"]["results"] == [lines[0]["result"]]
    assert verify_trail(app.extensions["candor"].store.audit_log)["ok"]

    # a job row's record replays to the same explanation, as any record does
    replay = app.extensions["candor"].service.replay(lines[3]["explanation_id"])
    assert replay["identical"], replay


@pytest.mark.parametrize(
    ("store_inputs", "options"),
    [("full", {"top_k": 3}), ("hash", {"top_k": 3}), ("full", {"layout": "columnar"})],
)
def test_split_records_equal_draft_for(app: Flask, store_inputs: str, options: dict[str, Any]) -> None:
    """Each record of a chunk split into rows is byte for byte what ``draft_for`` records for that row's own
    envelope (its id, its result, the quality it alone gets), stored at the same time."""
    from api.demo import loan_model
    from api.jobs.rows import job_source, split_records
    from api.methods.registry import spec
    from api.service.explain_request import ExplainRequest
    from model_store.manifest import parse_manifest
    from model_store.reference import to_parquet
    from model_store.safe_load import dump_skops
    from model_store.stored_form import stored_form
    from model_store.tables import utcnow

    service = app.extensions["candor"].service
    version = "1"
    if store_inputs == "hash":
        manifest, pipeline, reference = loan_model()
        hashed = parse_manifest({**manifest, "store_inputs": "hash"})
        registry = app.extensions["candor"].store.registry
        version = str(registry.register_tabular(hashed, dump_skops(pipeline), to_parquet(reference)).version)
    instances = json.loads(loan_rows(5).to_json(orient="records"))
    info, explanation = service.compute(ExplainRequest("shap", "loan", version, instances, options))
    row_quality = spec("shap").row_quality
    now = utcnow()
    split = split_records("shap", explanation, row_quality, info, instances, options, "k1", "job", 10, now)
    assert len({row.id for row in split} | {explanation.id}) == 6, "each row its own id"
    for offset, row in enumerate(split):
        alone = dataclasses.replace(
            explanation,
            id=row.id,
            results=[explanation.results[offset]],
            quality=row_quality(explanation.quality, explanation.results[offset]),
        )
        source = job_source("job", 10 + offset)
        slow = stored_form(draft_for("shap", alone, info, [instances[offset]], options, "k1", source), now)
        assert row.record == slow
        assert row.result is explanation.results[offset]
    stored = orjson.loads(split[2].record.body)
    assert ("instances" in stored["request"]) == (store_inputs == "full")


def test_parquet_upload_bad_row_and_parquet_result(
    app: Flask, keys: dict[str, str], dask_client: Any
) -> None:
    client = app.test_client()
    token = keys["explain"]
    frame = loan_rows(12)
    frame.loc[4, "purpose"] = "spaceship"  # an unknown category: that row alone fails
    frame.loc[9, "credit_amount"] = None  # a missing number: that row alone fails
    submitted = submit_file(
        client, token, parquet_bytes(frame), options={"layout": "columnar"}, filename="rows.parquet"
    )
    assert submitted.status_code == 202, submitted.data
    job_id = submitted.get_json()["id"]
    assert run_jobs(app, dask_client) == 1
    status = client.get(f"/v1/jobs/{job_id}", headers=bearer(token)).get_json()
    assert status["status"] == "succeeded"
    assert status["progress"]["errors"] == 2 and status["summary"]["rows_error"] == 2
    lines = result_lines(client, token, job_id)
    assert [line["row"] for line in lines] == list(range(12))
    assert [line["status"] for line in lines].count("error") == 2
    assert lines[4]["status"] == "error" and lines[4]["error"]["status"] == 422
    assert "purpose" in lines[4]["error"]["errors"]
    assert lines[9]["status"] == "error" and "credit_amount" in lines[9]["error"]["errors"]
    assert len(lines[0]["result"]["attribution_values"]) == 20
    assert len(job_records(app, job_id)) == 10

    response = client.get(f"/v1/jobs/{job_id}/result?format=parquet", headers=bearer(token))
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.data)).to_pylist()
    assert [row["row"] for row in table] == list(range(12))
    assert [row["status"] for row in table] == [line["status"] for line in lines]
    assert orjson.loads(table[0]["result"]) == lines[0]["result"]
    assert orjson.loads(table[4]["error"]) == lines[4]["error"]
    assert client.get(f"/v1/jobs/{job_id}/result?format=xml", headers=bearer(token)).status_code == 422


def test_dataset_job_and_counterfactual_summary(app: Flask, keys: dict[str, str], dask_client: Any) -> None:
    client = app.test_client()
    token = keys["explain"]
    dataset = client.post(
        "/v1/jobs",
        json={"model": "loan", "version": "production", "kind": "shap", "dataset": "reference"},
        headers=bearer(token),
    )
    assert dataset.status_code == 202, dataset.data
    assert dataset.get_json()["progress"]["rows_total"] == 1000
    assert dataset.get_json()["model"] == {"name": "loan", "version": 1}
    declined = json.loads((DATA / "loan_declined.json").read_text())
    rows = pd.DataFrame(declined["instances"] * 2 + json.loads(loan_rows(2).to_json(orient="records")))
    options = {"total_cfs": 2, "seed": 3}
    recourse = submit_file(client, token, csv_bytes(rows), kind="counterfactuals", options=options)
    assert recourse.status_code == 202, recourse.data
    assert run_jobs(app, dask_client) == 2

    shap_job = client.get(f"/v1/jobs/{dataset.get_json()['id']}", headers=bearer(token)).get_json()
    assert shap_job["status"] == "succeeded" and shap_job["progress"]["rows_done"] == 1000
    assert len(result_lines(client, token, shap_job["id"])) == 1000

    cf_id = recourse.get_json()["id"]
    job = client.get(f"/v1/jobs/{cf_id}", headers=bearer(token)).get_json()
    lines = result_lines(client, token, cf_id)
    statuses = [line["result"]["status"] for line in lines]
    assert job["summary"]["status_counts"] == {s: statuses.count(s) for s in set(statuses)}
    needing = statuses.count("ok") + statuses.count("no_counterfactual")
    assert job["summary"]["recourse_share"] == pytest.approx(statuses.count("ok") / needing)
    # each row is explained as that row sent alone (seeded per request)
    for line, instance in zip(lines, rows.to_dict("records"), strict=True):
        alone = client.post(
            "/v1/models/loan/versions/1/explain/counterfactuals",
            json={"instances": [json.loads(json.dumps(instance))], **options},
            headers=bearer(token),
        ).get_json()["results"][0]
        assert [c["changes"] for c in line["result"]["counterfactuals"]] == [
            c["changes"] for c in alone["counterfactuals"]
        ]
    assert verify_trail(app.extensions["candor"].store.audit_log)["ok"]


# -- cancellation ----------------------------------------------------------------------------------------
def test_cancel_queued_and_running_jobs(make_app: Any, dask_client: Any) -> None:
    app = make_app(job_chunk_rows=5)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("jobs", ["explain"])[0]
    body = {"model": "loan", "version": "1", "kind": "shap", "dataset": "reference"}
    queued = client.post("/v1/jobs", json=body, headers=bearer(token)).get_json()
    jobs = JobStore(app.extensions["candor"].store.sessions, app.extensions["candor"].settings.data_dir)
    assert jobs.has_input(queued["id"])
    cancelled = client.delete(f"/v1/jobs/{queued['id']}", headers=bearer(token))
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"
    assert not jobs.has_input(queued["id"]), "a cancelled job's input rows are deleted"
    assert client.delete(f"/v1/jobs/{queued['id']}", headers=bearer(token)).status_code == 202
    assert run_jobs(app, dask_client) == 0
    assert client.get(f"/v1/jobs/{queued['id']}/result", headers=bearer(token)).status_code == 409

    running = client.post("/v1/jobs", json=body, headers=bearer(token)).get_json()
    thread = threading.Thread(target=run_jobs, args=(app, dask_client))
    thread.start()
    deadline = time.monotonic() + 60
    while jobs.get(running["id"])["chunks_done"] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    answer = client.delete(f"/v1/jobs/{running['id']}", headers=bearer(token))
    thread.join(60)
    assert answer.status_code == 202
    job = jobs.get(running["id"])
    assert job["status"] == "cancelled"
    assert 2 <= job["chunks_done"] < 200, job["chunks_done"]
    assert not jobs.has_input(running["id"]), "its runner deleted the input when it stopped"
    assert len(job_records(app, running["id"])) == job["rows_done"] == 5 * job["chunks_done"]
    assert verify_trail(app.extensions["candor"].store.audit_log)["ok"]


def test_finished_job_cannot_be_cancelled(app: Flask, keys: dict[str, str], dask_client: Any) -> None:
    client = app.test_client()
    job = submit_file(app.test_client(), keys["explain"], csv_bytes(loan_rows(3))).get_json()
    run_jobs(app, dask_client)
    answer = client.delete(f"/v1/jobs/{job['id']}", headers=bearer(keys["explain"]))
    assert answer.status_code == 409 and answer.mimetype == PROBLEM


# -- refusals --------------------------------------------------------------------------------------------
def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    return response.get_json()  # type: ignore[no-any-return]


def test_bad_files_are_422_naming_file(app: Flask, keys: dict[str, str]) -> None:
    client, token = app.test_client(), keys["explain"]
    garbage = problem(submit_file(client, token, b"\x00\x01\x02 not, a\ncsv \xff\xfe"), 422)
    assert "file" in garbage["errors"]
    unknown = loan_rows(3).assign(shoe_size=42)
    assert (
        "Unknown columns: shoe_size"
        in problem(submit_file(client, token, csv_bytes(unknown)), 422)["errors"]["file"][0]
    )
    missing = loan_rows(3).drop(columns=["purpose"])
    assert (
        "Missing columns: purpose"
        in problem(submit_file(client, token, csv_bytes(missing)), 422)["errors"]["file"][0]
    )
    wrong = loan_rows(3).astype({"credit_amount": object})
    wrong.loc[1, "credit_amount"] = "lots"
    assert "file" in problem(submit_file(client, token, csv_bytes(wrong)), 422)["errors"]
    header_only = csv_bytes(loan_rows(0))
    assert "file" in problem(submit_file(client, token, header_only), 422)["errors"]
    broken_parquet = parquet_bytes(loan_rows(3))[:-20]
    assert "file" in problem(submit_file(client, token, broken_parquet), 422)["errors"]
    no_file = client.post(
        "/v1/jobs",
        data={"model": "loan", "kind": "shap"},
        headers=bearer(token),
        content_type="multipart/form-data",
    )
    assert "file" in problem(no_file, 422)["errors"]
    jobs_dir = app.extensions["candor"].settings.data_dir / "jobs"
    assert not jobs_dir.exists() or not list(jobs_dir.iterdir())  # a refused job leaves no files


def test_options_are_checked_at_submission(app: Flask, keys: dict[str, str]) -> None:
    client, token = app.test_client(), keys["explain"]
    rows = csv_bytes(loan_rows(3))
    errors = problem(submit_file(client, token, rows, options={"layout": "diagonal"}), 422)["errors"]
    assert "options.layout" in errors
    errors = problem(submit_file(client, token, rows, options={"instances": []}), 422)["errors"]
    assert "options.instances" in errors
    errors = problem(submit_file(client, token, rows, options={"target": "maybe"}), 422)["errors"]
    assert "options.target" in errors  # only the model knows its classes: the probe finds it
    errors = problem(submit_file(client, token, rows, options={"max_evals": 10**6}), 422)["errors"]
    assert "options.max_evals" in errors
    cf = {"features_to_vary": ["age_in_years"]}  # protected and immutable
    errors = problem(submit_file(client, token, rows, kind="counterfactuals", options=cf), 422)["errors"]
    assert "options.features_to_vary.0" in errors
    errors = problem(submit_file(client, token, rows, kind="attention"), 422)["errors"]
    assert "kind" in errors
    errors = problem(submit_file(client, token, rows, kind="lime"), 422)["errors"]
    assert "kind" in errors
    text = client.post(
        "/v1/jobs",
        data={"model": "loan", "kind": "shap", "options": "{NaN", "file": (io.BytesIO(rows), "r.csv")},
        headers=bearer(token),
        content_type="multipart/form-data",
    )
    assert "options" in problem(text, 422)["errors"]
    dataset = client.post(
        "/v1/jobs", json={"model": "loan", "kind": "shap", "dataset": "everything"}, headers=bearer(token)
    )
    assert "dataset" in problem(dataset, 422)["errors"]


def test_too_many_rows_unknown_model_and_content_type(make_app: Any) -> None:
    app = make_app(max_job_rows=5)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("jobs", ["explain"])[0]
    assert "file" in problem(submit_file(client, token, csv_bytes(loan_rows(6))), 413)["errors"]
    assert submit_file(client, token, csv_bytes(loan_rows(5))).status_code == 202
    dataset = client.post(
        "/v1/jobs", json={"model": "loan", "kind": "shap", "dataset": "reference"}, headers=bearer(token)
    )
    assert "dataset" in problem(dataset, 413)["errors"]
    problem(submit_file(client, token, csv_bytes(loan_rows(2)), model="mortgage"), 404)
    problem(submit_file(client, token, csv_bytes(loan_rows(2)), version="9"), 404)
    problem(
        client.post("/v1/jobs", data=b"model=loan", headers={**bearer(token), "Content-Type": "text/plain"}),
        415,
    )


def test_jobs_are_private_to_their_key(app: Flask, keys: dict[str, str]) -> None:
    client = app.test_client()
    store = app.extensions["candor"].store
    other = store.keys.create("other", ["explain"])[0]
    job_id = submit_file(client, keys["explain"], csv_bytes(loan_rows(2))).get_json()["id"]
    for method, path in (("GET", ""), ("GET", "/result"), ("DELETE", "")):
        problem(client.open(f"/v1/jobs/{job_id}{path}", method=method, headers=bearer(other)), 404)
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["admin"])).status_code == 200
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["explain"])).status_code == 200
    problem(client.get("/v1/jobs/not-a-job", headers=bearer(keys["explain"])), 404)
    problem(client.get(f"/v1/jobs/{job_id}", headers=bearer(keys["audit:read"])), 403)
    limited = store.keys.create("clinical-only", ["explain"], ["clinical"])[0]
    problem(submit_file(client, limited, csv_bytes(loan_rows(2))), 404)
    dataset = {"model": "loan", "kind": "shap", "dataset": "reference"}
    problem(client.post("/v1/jobs", json=dataset, headers=bearer(limited)), 404)


def test_a_model_limited_key_sees_no_job_of_another_model(app: Flask, keys: dict[str, str]) -> None:
    """Even with ``admin``, a key limited to ``loan`` neither reads, fetches the results of nor cancels a
    job of another model: a 404 as if it did not exist, and the job is left as it was."""
    client = app.test_client()
    limited = app.extensions["candor"].store.keys.create("loan-admin", ["admin"], ["loan"])[0]
    queued = {}
    for model in ("loan", "clinical"):
        body = {"model": model, "kind": "shap", "dataset": "reference"}
        response = client.post("/v1/jobs", json=body, headers=bearer(keys["explain"]))
        assert response.status_code == 202, response.data
        queued[model] = response.get_json()["id"]
    hidden = queued["clinical"]
    for method, path in (("GET", ""), ("GET", "/result"), ("GET", "/result?format=parquet"), ("DELETE", "")):
        body = problem(client.open(f"/v1/jobs/{hidden}{path}", method=method, headers=bearer(limited)), 404)
        assert body["detail"] == f"No job '{hidden}'."
    assert client.get(f"/v1/jobs/{hidden}", headers=bearer(keys["admin"])).get_json()["status"] == "queued"
    visible = queued["loan"]
    assert client.get(f"/v1/jobs/{visible}", headers=bearer(limited)).status_code == 200
    problem(client.get(f"/v1/jobs/{visible}/result", headers=bearer(limited)), 409)  # not done yet
    cancelled = client.delete(f"/v1/jobs/{visible}", headers=bearer(limited))
    assert cancelled.status_code == 202 and cancelled.get_json()["status"] == "cancelled"

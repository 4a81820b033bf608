"""Models served elsewhere (``format: remote``) against real predictors on loopback: MLServer 1.7.1 with its
scikit-learn runtime (Open Inference Protocol V2) and a stdlib KServe V1 server (tests/predictor_stub.py)
serving the same scikit-learn Pipeline. Oracles: the Pipeline called in-process, and the same Pipeline
registered here with skops (permutation SHAP and counterfactuals with the same seed)."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from cf_oracles import feature_rules, violations
from flask import Flask
from flask.testing import FlaskClient
from predictor_servers import posts
from remote_fixtures import (  # noqa: F401 (fixtures)
    FEATURES,
    REMOTE_NAME,
    assert_close,
    bearer,
    fitted_fixture,
    mlserver_fixture,
    ok,
    proba_of,
    register,
    regressor_fixture,
    remote_manifest,
    rows,
    v1_server_fixture,
    without_ood,
)
from sklearn.pipeline import Pipeline
from tiny_models import tiny_manifest

from model_store.predictors import counting_calls
from model_store.safe_load import dump_skops


@pytest.mark.parametrize("protocol", ["v2", "v1"])
def test_a_remote_model_answers_as_the_model_itself(
    protocol: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
) -> None:
    frame, pipeline = fitted
    base = request.getfixturevalue("mlserver" if protocol == "v2" else "v1_server")
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", base)
    manifest = remote_manifest(f"remote-{protocol}", protocol)
    described = ok(register(client, keys["models:write"], manifest, frame))
    assert described["format"] == "remote"
    stored = described["manifest"]["predictor"]
    assert stored == {**manifest["predictor"], "inputs": "columns"}
    predictor = json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()
    assert described["artifact_sha256"] == hashlib.sha256(predictor).hexdigest()
    assert "shap" in described["methods"] and "counterfactuals" in described["methods"]

    sent = rows(frame, 50)
    url = f"/v1/models/{manifest['name']}/versions/1/predict"
    answer = ok(client.post(url, json={"instances": sent}, headers=bearer(keys["explain"])))
    expected = pipeline.predict_proba(pd.DataFrame(sent))
    np.testing.assert_allclose(proba_of(answer["predictions"]), expected, rtol=0, atol=1e-12)
    labels = [p["label"] for p in answer["predictions"]]
    assert labels == list(pipeline.predict(pd.DataFrame(sent)))


def test_a_remote_regressor_answers_its_values(
    monkeypatch: pytest.MonkeyPatch,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
    regressor: Pipeline,
    mlserver: str,
) -> None:
    frame, _ = fitted
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", mlserver)
    manifest = remote_manifest("tiny-remote-regressor")
    del manifest["classes"], manifest["favourable_class"]
    manifest.update(task="regression", target="score")
    manifest["predictor"]["model"] = "tiny-regressor"
    ok(register(client, keys["models:write"], manifest, frame))
    sent = rows(frame, 20)
    url = "/v1/models/tiny-remote-regressor/versions/1/predict"
    answer = ok(client.post(url, json={"instances": sent}, headers=bearer(keys["explain"])))
    values = [p["value"] for p in answer["predictions"]]
    np.testing.assert_allclose(values, regressor.predict(pd.DataFrame(sent)), rtol=0, atol=1e-12)
    body = {"instances": sent[:2], "algorithm": "permutation", "max_evals": 50}
    shap_url = "/v1/models/tiny-remote-regressor/versions/1/explain/shap"
    explained = ok(client.post(shap_url, json=body, headers=bearer(keys["explain"])))
    assert explained["quality"]["additivity_ok"] is True


def test_permutation_shap_and_counterfactuals_equal_the_local_model(
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
    mlserver: str,
) -> None:
    frame, pipeline = fitted
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", mlserver)
    writer, explain = keys["models:write"], bearer(keys["explain"])
    ok(register(client, writer, remote_manifest("tiny-remote"), frame))
    local = tiny_manifest("tiny-local")
    local["features"][1]["categories"] = ["blue", "green", "red"]
    ok(register(client, writer, local, frame, dump_skops(pipeline)))
    sent = rows(frame, 4)

    options = {"algorithm": "permutation", "seed": 3, "max_evals": 200}
    shap_remote, shap_local = [], []
    for row in sent:  # shap draws a longer request's rows from one generator in turn; here each its own
        body = {"instances": [row], **options}
        remote = ok(client.post("/v1/models/tiny-remote/versions/1/explain/shap", json=body, headers=explain))
        held = ok(client.post("/v1/models/tiny-local/versions/1/explain/shap", json=body, headers=explain))
        assert remote["method"]["algorithm"] == held["method"]["algorithm"] == "permutation"
        assert remote["method"]["params"]["implementation"] == "batched"
        shap_remote += remote["results"]
        shap_local += held["results"]
    # OOD scores are computed on the encoded rows: category codes here, one-hot columns in the Pipeline
    assert_close(without_ood(shap_remote), without_ood(shap_local))
    together = ok(
        client.post(
            "/v1/models/tiny-remote/versions/1/explain/shap",
            json={"instances": sent, **options},
            headers=explain,
        )
    )
    assert_close(together["results"], shap_remote)

    declined = [r for r in rows(frame, 40) if pipeline.predict(pd.DataFrame([r]))[0] == "no"][:3]
    body = {"instances": declined, "seed": 5, "total_cfs": 2}
    with counting_calls() as every_request:  # the explanation's and its record's (this thread's tallies nest)
        cf_remote = ok(
            client.post(
                "/v1/models/tiny-remote/versions/1/explain/counterfactuals", json=body, headers=explain
            )
        )
    cf_local = ok(
        client.post("/v1/models/tiny-local/versions/1/explain/counterfactuals", json=body, headers=explain)
    )
    record = ok(client.get(f"/v1/explanations/{cf_remote['id']}", headers=bearer(keys["audit:read"])))
    # the query rows and every row's first two rounds in one request, then the walk back's passes; the
    # record's answer for the query rows is what the predictor answered then: no request more
    assert every_request.requests == record["remote"]["requests"] <= 3
    np.testing.assert_allclose(
        proba_of(record["remote"]["answered"]), pipeline.predict_proba(pd.DataFrame(declined)), atol=1e-12
    )
    found_remote = [[cf["instance"] for cf in r["counterfactuals"]] for r in cf_remote["results"]]
    found_local = [[cf["instance"] for cf in r["counterfactuals"]] for r in cf_local["results"]]
    assert found_remote == found_local and any(found_remote)
    rules = feature_rules(local, pipeline, frame[FEATURES])
    for query, found in zip(declined, found_remote, strict=True):
        for cf in found:
            assert violations(query, cf, rules, FEATURES, {}) == []
    rescored = v2_infer(mlserver, [cf for found in found_remote for cf in found])
    assert (rescored[:, 1] > 0.5).all(), rescored


def v2_infer(base: str, instances: list[dict[str, Any]]) -> np.ndarray:
    """The MLServer model asked directly (not through Candor)."""
    inputs = []
    for name in FEATURES:
        values = [row[name] for row in instances]
        datatype = "BYTES" if name == "colour" else "FP64"
        inputs.append({"name": name, "shape": [len(values), 1], "datatype": datatype, "data": values})
        if datatype == "BYTES":
            inputs[-1]["parameters"] = {"content_type": "str"}
    body = {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": [{"name": "predict_proba"}]}
    answer = requests.post(f"{base}/v2/models/{REMOTE_NAME}/infer", json=body, timeout=30).json()
    output = answer["outputs"][0]
    return np.asarray(output["data"], dtype=float).reshape(output["shape"])


def test_the_record_states_the_remote_model_and_replays(
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
    mlserver: str,
) -> None:
    frame, pipeline = fitted
    secret_url = mlserver.replace("http://", "http://scott:url-secret-1@")
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", secret_url)
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_AUTHORIZATION", "Bearer header-secret-2")
    described = ok(register(client, keys["models:write"], remote_manifest("tiny-remote"), frame))
    sent = rows(frame, 2, start=10)
    body = {"instances": sent, "algorithm": "permutation", "seed": 1, "max_evals": 100}
    url = "/v1/models/tiny-remote/versions/1/explain/shap"
    envelope = ok(client.post(url, json=body, headers=bearer(keys["explain"])))

    audit = bearer(keys["audit:read"])
    record = ok(client.get(f"/v1/explanations/{envelope['id']}", headers=audit))
    remote = record["remote"]
    assert {k: remote[k] for k in ("protocol", "endpoint", "model")} == {
        "protocol": "v2",
        "endpoint": "TINY",
        "model": REMOTE_NAME,
    }
    assert 1 <= remote["requests"] <= 3, "one request for both rows' masked rows, two for their outputs"
    expected = pipeline.predict_proba(pd.DataFrame(sent))
    np.testing.assert_allclose(proba_of(remote["answered"]), expected, rtol=0, atol=1e-12)
    for text in (json.dumps(record), json.dumps(described), json.dumps(envelope)):
        assert "secret" not in text and "scott" not in text and str(mlserver.rsplit(":", 1)[1]) not in text

    replayed = ok(client.post(f"/v1/explanations/{envelope['id']}/replay", headers=audit))
    assert replayed["within_tolerance"] is True and replayed["max_abs_diff"] <= 1e-12, replayed


def test_records_of_local_models_have_no_remote_part(
    client: FlaskClient, keys: dict[str, str], fitted: tuple[pd.DataFrame, Pipeline]
) -> None:
    frame, pipeline = fitted
    local = tiny_manifest("tiny-local")
    ok(register(client, keys["models:write"], local, frame, dump_skops(pipeline)))
    body = {"instances": rows(frame, 1), "top_k": 2}
    envelope = ok(
        client.post(
            "/v1/models/tiny-local/versions/1/explain/shap", json=body, headers=bearer(keys["explain"])
        )
    )
    record = ok(client.get(f"/v1/explanations/{envelope['id']}", headers=bearer(keys["audit:read"])))
    assert "remote" not in record


def test_a_job_on_a_remote_model_asks_the_predictor_per_chunk_not_per_row(
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
    v1_server: str,
) -> None:
    from distributed import Client

    from api.jobs.cluster import local_cluster
    from api.jobs.runner import Runner
    from api.settings import Settings
    from model_store.audit import RecordFilter

    frame, _ = fitted
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", v1_server)  # before the cluster: its workers read it
    ok(register(client, keys["models:write"], remote_manifest("tiny-remote", "v1"), frame))
    token = keys["explain"]
    sent = frame[FEATURES].iloc[:30]
    options = {"algorithm": "permutation", "max_evals": 50, "seed": 2}
    form = {
        "model": "tiny-remote",
        "version": "1",
        "kind": "shap",
        "options": json.dumps(options),
        "file": (io.BytesIO(sent.to_csv(index=False).encode()), "rows.csv"),
    }
    submitted = client.post("/v1/jobs", data=form, headers=bearer(token), content_type="multipart/form-data")
    assert submitted.status_code == 202, submitted.get_data(as_text=True)
    job = submitted.get_json()
    before = posts(v1_server)
    context = app.extensions["candor"]
    with local_cluster(Settings.load({"dask_workers": 1}, environ={})) as cluster, Client(cluster) as dask:
        assert Runner(context.settings, store=context.store).run(once=True, client=dask) == 1
    requests_sent = posts(v1_server) - before
    status = ok(client.get(f"/v1/jobs/{job['id']}", headers=bearer(token)))
    assert status["status"] == "succeeded" and status["progress"]["errors"] == 0, status
    chunks = status["progress"]["chunks_total"]
    # per chunk: the masked rows of all its rows (30 x 7 permutations x 7 states x 100 background rows: two
    # requests of at most 100,000 rows), then their outputs and probabilities; not per row
    assert 1 <= requests_sent <= 4 * chunks and requests_sent <= len(sent) / 5, (requests_sent, chunks)

    lines = [
        orjson.loads(x)
        for x in client.get(f"/v1/jobs/{job['id']}/result", headers=bearer(token)).data.splitlines()
    ]
    alone = ok(
        client.post(
            "/v1/models/tiny-remote/versions/1/explain/shap",
            json={"instances": rows(frame, 1, start=17), **options},
            headers=bearer(token),
        )
    )
    assert_close(lines[17]["result"], alone["results"][0], "row 17")
    records = [
        r for r in context.store.audit.stream(RecordFilter()) if r["source"].get("job_id") == job["id"]
    ]
    assert len(records) == 30
    assert all(r["remote"] == {"protocol": "v1", "endpoint": "TINY", "model": REMOTE_NAME} for r in records)

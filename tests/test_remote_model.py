"""Models served elsewhere (``format: remote``) against real predictors on loopback: MLServer 1.7.1 with its
scikit-learn runtime (Open Inference Protocol V2) and a stdlib KServe V1 server (tests/predictor_stub.py)
serving the same scikit-learn Pipeline. Oracles: the Pipeline called in-process, and the same Pipeline
registered here with skops (permutation SHAP and counterfactuals with the same seed)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
import requests
from cf_oracles import feature_rules, violations
from flask import Flask
from flask.testing import FlaskClient
from predictor_servers import free_port, posts, running_mlserver, running_stub
from sklearn.pipeline import Pipeline
from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

PROBLEM = "application/problem+json"
FEATURES = ["size", "colour", "weight"]
REMOTE_NAME = "tiny-sklearn"


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, Pipeline]:
    frame = tiny_frame(200)
    return frame, tiny_pipeline(frame)


@pytest.fixture(scope="module")
def mlserver(
    tmp_path_factory: pytest.TempPathFactory, fitted: tuple[pd.DataFrame, Pipeline]
) -> Iterator[str]:
    with running_mlserver(tmp_path_factory.mktemp("mlserver"), {REMOTE_NAME: fitted[1]}) as base:
        yield base


@pytest.fixture(scope="module")
def v1_server(
    tmp_path_factory: pytest.TempPathFactory, fitted: tuple[pd.DataFrame, Pipeline]
) -> Iterator[str]:
    import joblib

    path = tmp_path_factory.mktemp("v1") / "model.joblib"
    joblib.dump(fitted[1], path)
    with running_stub("v1", path) as base:
        yield base


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def remote_manifest(name: str, protocol: str = "v2", endpoint: str = "TINY") -> dict[str, Any]:
    manifest = tiny_manifest(name)
    manifest["features"][1]["categories"] = ["blue", "green", "red"]
    manifest["format"] = "remote"
    manifest["predictor"] = {"protocol": protocol, "model": REMOTE_NAME, "endpoint": endpoint}
    return manifest


def register(
    client: FlaskClient,
    token: str,
    manifest: dict[str, Any],
    frame: pd.DataFrame,
    artifact: bytes | None = None,
) -> Any:
    data: dict[str, Any] = {
        "manifest": json.dumps(manifest),
        "reference": (io.BytesIO(to_parquet(frame[FEATURES])), "reference.parquet"),
    }
    if artifact is not None:
        data["artifact"] = (io.BytesIO(artifact), "model.skops")
    return client.post(
        f"/v1/models/{manifest['name']}/versions",
        data=data,
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def rows(frame: pd.DataFrame, n: int, start: int = 0) -> list[dict[str, Any]]:
    return json.loads(frame[FEATURES].iloc[start : start + n].to_json(orient="records"))


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return response.get_json()


def proba_of(predictions: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[p["probabilities"]["no"], p["probabilities"]["yes"]] for p in predictions])


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
    cf_remote = ok(
        client.post("/v1/models/tiny-remote/versions/1/explain/counterfactuals", json=body, headers=explain)
    )
    cf_local = ok(
        client.post("/v1/models/tiny-local/versions/1/explain/counterfactuals", json=body, headers=explain)
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


def without_ood(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in result.items() if k != "ood"} for result in results]


def assert_close(got: Any, expected: Any, path: str = "results") -> None:
    """The same JSON structure, numbers within 1e-9 (floating summation order), everything else equal."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), path
        for key in expected:
            assert_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_close(a, b, f"{path}.{index}")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert got == pytest.approx(expected, rel=0, abs=1e-9), path
    else:
        assert got == expected, path


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


FAULTS = {
    # mode: (status, words in the detail, POSTs the predictor receives with 2 retries)
    "slow": (504, "did not answer in 0.5 s", 1),
    "error": (502, "answered 503", 3),
    "shape": (502, "answered the wrong shape: predictions are not 2 numbers per row", 1),
}


@pytest.mark.parametrize("mode", [*FAULTS, "unreachable"])
def test_a_failing_predictor_is_a_502_or_504_and_nothing_is_recorded(
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
    v1_server: str,
) -> None:
    frame, _ = fitted
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", v1_server)
    store = app.extensions["candor"].store
    # registered here, not over HTTP (whose answer loads the model, reading the endpoint's settings then)
    manifest = parse_manifest(remote_manifest("tiny-remote", "v1"))
    store.registry.register_tabular(manifest, None, to_parquet(frame[FEATURES]))
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_TIMEOUT", "0.5")
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_RETRIES", "2")
    before = store.audit.count()
    body = {"instances": rows(frame, 2), "algorithm": "permutation", "max_evals": 50}
    url = "/v1/models/tiny-remote/versions/1/explain/shap"
    if mode == "unreachable":
        monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", f"http://127.0.0.1:{free_port()}")
        status, words, expected_posts = 502, "could not be reached", None
        response = client.post(url, json=body, headers=bearer(keys["explain"]))
    else:
        status, words, expected_posts = FAULTS[mode]
        with running_stub(mode) as base:
            monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", base)
            response = client.post(url, json=body, headers=bearer(keys["explain"]))
            received = posts(base)
        assert received == expected_posts, response.get_data(as_text=True)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["detail"].startswith(f"The predictor TINY ({REMOTE_NAME}) ")
    assert words in problem["detail"] and "127.0.0.1" not in problem["detail"]
    assert problem["type"].endswith("predictor-timeout" if status == 504 else "predictor-failed")
    assert store.audit.count() == before


def test_registration_needs_an_answering_predictor(
    monkeypatch: pytest.MonkeyPatch,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
) -> None:
    frame, _ = fitted
    writer = keys["models:write"]
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_RETRIES", "0")
    refused = register(client, writer, remote_manifest("tiny-remote"), frame)
    assert refused.status_code == 502 and refused.mimetype == PROBLEM, refused.get_data(as_text=True)
    assert client.get("/v1/models/tiny-remote", headers=bearer(keys["explain"])).status_code == 404
    monkeypatch.delenv("CANDOR_PREDICTOR_TINY_URL")
    unset = register(client, writer, remote_manifest("tiny-remote"), frame)
    assert unset.status_code == 503 and "CANDOR_PREDICTOR_TINY_URL" in unset.get_json()["detail"]

    with_artifact = register(client, writer, remote_manifest("tiny-remote"), frame, b"not a model")
    assert with_artifact.status_code == 422 and "artifact" in with_artifact.get_json()["errors"]
    no_artifact = tiny_manifest("tiny-local")
    missing = register(client, writer, no_artifact, frame)
    assert missing.status_code == 422 and "artifact" in missing.get_json()["errors"]
    for wrong in ({"format": "remote"}, {"predictor": {"protocol": "v2", "model": "m", "endpoint": "TINY"}}):
        manifest = {**tiny_manifest("tiny-remote"), **wrong}
        refused = register(client, writer, manifest, frame)
        assert refused.status_code == 422 and "manifest.predictor" in refused.get_json()["errors"], (
            refused.get_json()
        )
    bad_endpoint = remote_manifest("tiny-remote", endpoint="lower-case")
    refused = register(client, writer, bad_endpoint, frame)
    assert refused.status_code == 422 and "manifest.predictor.endpoint" in refused.get_json()["errors"]


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

"""ONNX models (format: onnx) registered over HTTP and explained by every tabular method, checked against
onnxruntime called directly on the same rows: predictions, permutation SHAP (shap's PermutationExplainer on
the same prediction function, background and seed), counterfactuals re-scored by onnxruntime with the
issue-3 constraint oracle; and the uploads that are refused with a 422 naming why.

Models (tests/onnx_models.py): the credit Pipeline converted by skl2onnx with one input per feature, a
gradient boosting model on the coded matrix with its ZipMap output, a regressor, and an XGBoost multiclass
model converted by onnxmltools.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import requests
import shap
from cf_oracles import Served, Subject, check_envelope, feature_rules, ok_json, records, serve
from gunicorn_process import free_port, running_gunicorn, server_env
from onnx_models import (
    OrtOracle,
    coded,
    matrix_classifier,
    per_feature_classifier,
    per_feature_regressor,
    softmax_classifier,
    with_external_initializer,
    with_node,
    xgboost_multiclass,
)
from sklearn.base import clone
from test_jobs import csv_bytes, dask_client, result_lines, run_jobs, submit_file  # noqa: F401 (a fixture)

from api.http.app import create_app
from explainers.shap_backends import PermutationBackend
from model_store.reference import to_parquet
from model_store.store import Store

PROBLEM = "application/problem+json"
Builder = Callable[[], tuple[dict[str, Any], bytes, pd.DataFrame]]
BUILDERS: dict[str, Builder] = {
    "onnx-credit": per_feature_classifier,
    "onnx-matrix": matrix_classifier,
    "onnx-regression": per_feature_regressor,
    "onnx-xgb": xgboost_multiclass,
    "onnx-softmax": softmax_classifier,
}


def register(served: Served, manifest: dict[str, Any], artifact: bytes, reference: pd.DataFrame) -> Any:
    return served.client.post(
        f"/v1/models/{manifest['name']}/versions",
        headers=served.writer,
        content_type="multipart/form-data",
        data={
            "manifest": json.dumps(manifest),
            "artifact": (io.BytesIO(artifact), "model.onnx"),
            "reference": (io.BytesIO(to_parquet(reference)), "reference.parquet"),
        },
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One SQLite app holding every test model (registered over HTTP) plus an audit key."""
    data = tmp_path_factory.mktemp("onnx") / "data"
    app = create_app(
        {"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}", "job_chunk_rows": 2}
    )
    try:
        out = serve(app)
        for build in BUILDERS.values():
            response = register(out, *build())
            assert response.status_code == 201, response.get_json()
        yield out
    finally:
        app.extensions["candor"].store.close()


@pytest.fixture(scope="module")
def auditor(served: Served) -> dict[str, str]:
    token = served.app.extensions["candor"].store.keys.create("onnx-audit", ["audit:read"])[0]
    return {"Authorization": f"Bearer {token}"}


def rows_of(name: str, n: int, start: int = 0) -> list[dict[str, Any]]:
    manifest, _, reference = BUILDERS[name]()
    features = [f["name"] for f in manifest["features"]]
    return records(reference[features].iloc[start : start + n])


def oracle(name: str) -> OrtOracle:
    manifest, artifact, _ = BUILDERS[name]()
    return OrtOracle(manifest, artifact)


def url(name: str, tail: str) -> str:
    return f"/v1/models/{name}/versions/1/{tail}"


# -- registration and predictions ----------------------------------------------------------------------------
def test_registered_over_both_databases(client: Any, keys: dict[str, str]) -> None:
    """Registration works on SQLite and PostgreSQL; the version describes its format and artifact."""
    manifest, artifact, reference = per_feature_classifier()
    writer = {"Authorization": f"Bearer {keys['models:write']}"}
    served = Served(client.application, client, {}, writer)
    response = register(served, manifest, artifact, reference)
    assert response.status_code == 201, response.get_json()
    version = response.get_json()
    assert version["format"] == "onnx"
    assert version["feature_order"] == [f["name"] for f in manifest["features"]]
    assert version["artifact_sha256"] == hashlib.sha256(artifact).hexdigest()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_predictions_equal_onnxruntime(served: Served, name: str) -> None:
    rows = rows_of(name, 40)
    body = ok_json(served.client.post(url(name, "predict"), json={"instances": rows}, headers=served.auth))
    direct = oracle(name)
    manifest = BUILDERS[name]()[0]
    expected = direct.predict_proba(direct.frame(rows)) if "classes" in manifest else None
    for i, prediction in enumerate(body["predictions"]):
        if expected is None:
            assert prediction["value"] == pytest.approx(
                direct.predict(direct.frame(rows[i : i + 1]))[0], abs=0
            )
            continue
        got = [prediction["probabilities"][c] for c in manifest["classes"]]
        np.testing.assert_array_equal(got, expected[i])
        assert prediction["label"] == manifest["classes"][int(expected[i].argmax())]


def test_session_runs_on_the_cpu_provider_with_one_thread(served: Served) -> None:
    registry = served.app.extensions["candor"].store.registry
    model = registry.load(registry.resolve("onnx-credit", "1"))
    assert model.has_fast_encoder  # the manifest's codes compile to the NumPy encoder
    assert PermutationBackend(model, "probability", 10).direct  # masked rows skip the frame round trip
    session = model.parts.estimator.session.session
    assert session.get_providers() == ["CPUExecutionProvider"]
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    # copied by libraries: a pickle rebuilds the session from the bytes, copies share it
    coded_rows = model.encode(rows_of("onnx-credit", 5))
    expected = model.parts.estimator.predict_proba(coded_rows)
    for copied in (
        pickle.loads(pickle.dumps(model.estimator)),
        copy.deepcopy(model.estimator),
        clone(model.estimator),
    ):
        np.testing.assert_array_equal(copied[-1].predict_proba(coded_rows), expected)


# -- SHAP --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["onnx-credit", "onnx-matrix", "onnx-regression"])
def test_permutation_shap_equals_shap_called_directly(served: Served, name: str) -> None:
    """``auto`` picks permutation SHAP; its attributions equal shap's PermutationExplainer on onnxruntime's
    own outputs with the same background sample, seed and max_evals, and add up to the output."""
    manifest, _, reference = BUILDERS[name]()
    features = [f["name"] for f in manifest["features"]]
    rows = rows_of(name, 3, start=10)
    options = {"seed": 3, "max_evals": 64, "background_rows": 40}
    envelope = ok_json(
        served.client.post(
            url(name, "explain/shap"), json={"instances": rows, **options}, headers=served.auth
        )
    )
    assert envelope["method"]["algorithm"] == "permutation"
    direct = oracle(name)
    background = coded(manifest, reference[features].sample(n=40, random_state=0))
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explainer = shap.PermutationExplainer(direct.outputs_coded, masker, seed=3)
    expected = explainer(coded(manifest, pd.DataFrame(rows)), max_evals=64, silent=True)
    values = np.asarray(expected.values).reshape(len(rows), len(features), -1)
    base = np.asarray(expected.base_values).reshape(len(rows), -1)
    outputs = direct.outputs_coded(coded(manifest, pd.DataFrame(rows))).reshape(len(rows), -1)
    classes = manifest.get("classes", [None])
    for i, result in enumerate(envelope["results"]):
        k = classes.index(result["target"]) if "classes" in manifest else 0
        got = {a["feature"]: a["attribution"] for a in result["attributions"]}
        np.testing.assert_allclose([got[f] for f in features], values[i, :, k], rtol=0, atol=1e-12)
        assert result["base_value"] == pytest.approx(base[i, k], abs=1e-12)
        assert result["output_value"] == pytest.approx(outputs[i, k], abs=1e-12)
        assert result["base_value"] + sum(got.values()) == pytest.approx(outputs[i, k], abs=1e-9)


def test_kernel_shap_equals_shap_called_directly(served: Served) -> None:
    """Kernel SHAP on the matrix model equals shap's KernelExplainer over onnxruntime with the same
    40-row background (the backend's summary when it has at most 50 rows), seed and nsamples."""
    name = "onnx-matrix"
    manifest, _, reference = BUILDERS[name]()
    features = [f["name"] for f in manifest["features"]]
    rows = rows_of(name, 2, start=20)
    options = {"algorithm": "kernel", "seed": 5, "max_evals": 200, "background_rows": 40}
    envelope = ok_json(
        served.client.post(
            url(name, "explain/shap"), json={"instances": rows, **options}, headers=served.auth
        )
    )
    assert envelope["method"]["algorithm"] == "kernel"
    direct = oracle(name)
    background = coded(manifest, reference[features].sample(n=40, random_state=0))
    explainer = shap.KernelExplainer(direct.outputs_coded, background)
    np.random.seed(5)
    values = np.asarray(explainer.shap_values(coded(manifest, pd.DataFrame(rows)), nsamples=200, silent=True))
    values = values.reshape(len(rows), len(features), -1)
    for i, result in enumerate(envelope["results"]):
        k = manifest["classes"].index(result["target"])
        got = {a["feature"]: a["attribution"] for a in result["attributions"]}
        np.testing.assert_allclose([got[f] for f in features], values[i, :, k], rtol=0, atol=1e-9)
        assert result["base_value"] == pytest.approx(np.ravel(explainer.expected_value)[k], abs=1e-9)


def test_exact_shap_algorithms_are_refused_by_name(served: Served) -> None:
    body = {"instances": rows_of("onnx-credit", 1), "algorithm": "tree"}
    response = served.client.post(url("onnx-credit", "explain/shap"), json=body, headers=served.auth)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert "algorithm" in response.get_json()["errors"]


# -- counterfactuals -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["onnx-credit", "onnx-matrix"])
def test_counterfactuals_are_valid_when_rescored_by_onnxruntime(served: Served, name: str) -> None:
    """Every counterfactual reaches the favourable class when onnxruntime scores it, and none breaks a
    constraint (the issue-3 oracle: range, step grid, monotone, immutable, protected, categories)."""
    manifest, _, reference = BUILDERS[name]()
    features = [f["name"] for f in manifest["features"]]
    direct = oracle(name)
    subject = Subject(name, manifest, direct, reference[features], feature_rules(manifest, direct, reference))
    declined = subject.label_rows("approve", predicted=False, limit=8)
    assert len(declined) == 8
    body = {"instances": declined, "total_cfs": 3, "seed": 0, "budget_ms": 5000}
    envelope = ok_json(
        served.client.post(url(name, "explain/counterfactuals"), json=body, headers=served.auth)
    )
    found = check_envelope(subject, envelope, body)
    assert sum(1 for f in found if f) >= 6, [r["status"] for r in envelope["results"]]
    assert envelope["quality"]["dropped"] == {"invalid": 0, "constraint_violations": 0}


# -- every other method, records and replay ------------------------------------------------------------------
BODIES = {
    "shap": {"top_k": 5},
    "reasons": {"max_reasons": 3},
    "effects": {"features": ["tenure", "plan"], "grid_resolution": 5},
    "counterfactuals": {"total_cfs": 2, "budget_ms": 1000},
}


@pytest.mark.parametrize("method", list(BODIES))
def test_methods_answer_record_and_replay(served: Served, auditor: dict[str, str], method: str) -> None:
    body = {"instances": rows_of("onnx-credit", 2, start=3), **BODIES[method]}
    envelope = ok_json(
        served.client.post(url("onnx-credit", f"explain/{method}"), json=body, headers=served.auth)
    )
    assert envelope["results"]
    if method == "shap":
        assert all("is_outlier" in result["ood"] for result in envelope["results"])
    record = ok_json(served.client.get(f"/v1/explanations/{envelope['id']}", headers=auditor))
    assert record["id"] == envelope["id"]
    replay = ok_json(served.client.post(f"/v1/explanations/{envelope['id']}/replay", headers=auditor))
    assert replay["within_tolerance"] is True and replay["differences"] == [], replay


@pytest.mark.parametrize("tail", ["importance", "profile", "segments"])
def test_version_summaries_answer(served: Served, tail: str) -> None:
    """Importance is permutation SHAP on 50 reference rows at the server's defaults (~6 s here)."""
    body = ok_json(served.client.get(url("onnx-credit", tail), headers=served.auth))
    if tail == "importance":
        assert body["method"]["algorithm"] == "permutation"
        assert {f["feature"] for f in body["features"]} == {
            f["name"] for f in BUILDERS["onnx-credit"]()[0]["features"]
        }


def test_a_small_job_runs_on_dask_workers(served: Served, dask_client: Any) -> None:  # noqa: F811
    """Three rows in two chunks: the workers load the ONNX version from its shipped bytes, and each line
    equals the explain endpoint's answer for that row alone (sampled SHAP runs row by row in a job)."""
    token = served.auth["Authorization"].removeprefix("Bearer ")
    rows = rows_of("onnx-credit", 3)
    options = {"seed": 1, "max_evals": 32, "background_rows": 20}
    submitted = submit_file(
        served.client, token, csv_bytes(pd.DataFrame(rows)), "shap", options, "onnx-credit"
    )
    assert submitted.status_code == 202, submitted.get_json()
    assert run_jobs(served.app, dask_client) == 1
    lines = [line for line in result_lines(served.client, token, submitted.get_json()["id"]) if "row" in line]
    assert [line["status"] for line in lines] == ["ok"] * 3, lines
    expected_results = []
    for row in rows:
        body = {"instances": [row], **options}
        response = served.client.post(url("onnx-credit", "explain/shap"), json=body, headers=served.auth)
        expected_results += ok_json(response)["results"]
    for line in lines:
        expected = expected_results[line["row"]]
        got = {a["feature"]: a["attribution"] for a in line["result"]["attributions"]}
        want = {a["feature"]: a["attribution"] for a in expected["attributions"]}
        assert got == pytest.approx(want, abs=1e-12)


# -- refusals ------------------------------------------------------------------------------------------------
def custom_node(artifact: bytes) -> bytes:
    node = onnx.helper.make_node("Mystery", ["tenure"], ["mystery"], domain="com.example.ops")
    return with_node(artifact, node, ("com.example.ops", 1))


def training_node(artifact: bytes) -> bytes:
    node = onnx.helper.make_node("Gradient", ["tenure"], ["grad"], domain="ai.onnx.preview.training")
    return with_node(artifact, node, ("ai.onnx.preview.training", 1))


def renamed_feature(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = json.loads(json.dumps(manifest))
    manifest["features"][0]["name"] = "years"
    manifest["reasons"]["years"] = manifest["reasons"].pop("tenure")
    return manifest


REFUSED: dict[str, tuple[Callable[[bytes], bytes], Callable[[dict[str, Any]], dict[str, Any]], str, str]] = {
    "custom domain": (custom_node, lambda m: m, "artifact", "custom domain 'com.example.ops'"),
    "training domain": (training_node, lambda m: m, "artifact", "training domain"),
    "external data": (with_external_initializer, lambda m: m, "artifact", "external file"),
    "pickle": (lambda a: pickle.dumps({"model": a}), lambda m: m, "artifact", "pickle"),
    "truncated": (lambda a: a[: len(a) // 2], lambda m: m, "artifact", "does not parse"),
    "not onnx": (lambda a: b"PK\x03\x04 a zip file", lambda m: m, "artifact", "does not parse"),
    "inputs": (lambda a: a, renamed_feature, "features", "input 'tenure'"),
    "classes": (lambda a: a, lambda m: {**m, "classes": ["deny", "approve"]}, "classes", "approve"),
    "label names": (
        lambda a: a,
        lambda m: {**m, "classes": ["yes", "no"], "favourable_class": "yes"},
        "classes",
        "",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unsafe_or_mismatched_uploads_are_422_naming_why(served: Served, case: str) -> None:
    change_artifact, change_manifest, field, phrase = REFUSED[case]
    manifest, artifact, reference = per_feature_classifier()
    manifest = change_manifest({**manifest, "name": "onnx-refused"})
    response = register(served, manifest, change_artifact(artifact), reference)
    assert response.status_code == 422, response.get_data(as_text=True)[:2000]
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert field in problem["errors"], problem
    assert phrase in json.dumps(problem), problem
    assert "Traceback" not in json.dumps(problem)
    assert served.client.get("/v1/models/onnx-refused", headers=served.auth).status_code == 404


def test_matrix_input_of_the_wrong_width_is_refused(served: Served) -> None:
    manifest, artifact, reference = matrix_classifier()
    reasons = {k: v for k, v in manifest["reasons"].items() if k != "age"}
    manifest = {**manifest, "name": "onnx-narrow", "features": manifest["features"][:-1], "reasons": reasons}
    response = register(served, manifest, artifact, reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert "input 'X'" in response.get_json()["errors"]["features"][0]


def test_a_graph_without_class_labels_is_checked_by_its_width(served: Served) -> None:
    """The hand-made softmax graph declares no labels: the manifest's are used (registered in ``served``,
    its label output being class positions), and three classes for its two columns are refused."""
    manifest, artifact, reference = softmax_classifier()
    manifest = {k: v for k, v in manifest.items() if k != "favourable_class"}
    manifest.update(name="onnx-three", task="multiclass_classification", classes=["approve", "deny", "maybe"])
    response = register(served, manifest, artifact, reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert "2 probabilities per row" in response.get_json()["errors"]["classes"][0]


def test_a_label_output_that_disagrees_with_the_probabilities_is_refused(served: Served) -> None:
    manifest, artifact, reference = softmax_classifier()
    proto = onnx.load_model_from_string(artifact)
    (argmax,) = [node for node in proto.graph.node if node.op_type == "ArgMax"]
    argmax.op_type = "ArgMin"
    response = register(served, {**manifest, "name": "onnx-argmin"}, proto.SerializeToString(), reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert "labels on the reference rows" in response.get_json()["errors"]["classes"][0]


def test_a_graph_answering_scores_where_probabilities_belong_is_refused(served: Served) -> None:
    """The softmax graph with its Softmax replaced by Identity: its "probabilities" are raw logits."""
    manifest, artifact, reference = softmax_classifier()
    proto = onnx.load_model_from_string(artifact)
    (softmax,) = [node for node in proto.graph.node if node.op_type == "Softmax"]
    softmax.op_type = "Identity"
    del softmax.attribute[:]
    response = register(served, {**manifest, "name": "onnx-logits"}, proto.SerializeToString(), reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    message = response.get_json()["errors"]["artifact"][0]
    assert "probabilities output has" in message and ("outside [0, 1]" in message or "sum to 1" in message)


def test_a_graph_that_fails_on_the_reference_rows_is_refused(served: Served) -> None:
    """The softmax graph with a symbolic input width (accepted when loaded) and weights for 7 features: it
    fails when it scores the 8-feature reference rows, a 422 naming ``reference``."""
    manifest, artifact, reference = softmax_classifier()
    proto = onnx.load_model_from_string(artifact)
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "width"
    (weights,) = [t for t in proto.graph.initializer if t.name == "W"]
    weights.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weights)[:7], "W"))
    response = register(served, {**manifest, "name": "onnx-narrow-w"}, proto.SerializeToString(), reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert "cannot score" in response.get_json()["errors"]["reference"][0]


def test_limits_refuse_oversize_files_and_graphs(tmp_path: Path) -> None:
    manifest, artifact, reference = per_feature_classifier()
    for setting, phrase in (
        ({"max_onnx_bytes": len(artifact) - 1}, "at most"),
        ({"max_onnx_nodes": 3}, "nodes"),
    ):
        data = tmp_path / next(iter(setting))
        app = create_app({"data_dir": data, "database_url": f"sqlite:///{data}.db", **setting})
        try:
            response = register(serve(app), manifest, artifact, reference)
            assert response.status_code == 422, response.get_json()
            assert phrase in response.get_json()["errors"]["artifact"][0]
        finally:
            app.extensions["candor"].store.close()


# -- end to end on the real gunicorn -----------------------------------------------------------------------
@pytest.mark.e2e
def test_gunicorn_registers_serves_and_refuses_over_its_settings(tmp_path: Path) -> None:
    """Two gunicorn workers: the ONNX model registered over real HTTP predicts what onnxruntime does,
    whichever worker loads it, and its SHAP adds up; CANDOR_MAX_ONNX_BYTES (read from the environment)
    refuses a bigger file."""
    manifest, artifact, reference = per_feature_classifier()
    data = tmp_path.resolve()
    store = Store(data, f"sqlite:///{data}/candor.db")
    token, _ = store.keys.create("e2e", ["models:write", "explain"])
    store.close()
    headers = {"Authorization": f"Bearer {token}"}
    env = server_env(
        data, free_port(), CANDOR_WORKERS="2", CANDOR_LOG_LEVEL="warning", CANDOR_MAX_ONNX_BYTES="100000"
    )
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:

        def upload(name: str, body: bytes) -> requests.Response:
            files = {
                "manifest": (None, json.dumps({**manifest, "name": name})),
                "artifact": ("model.onnx", body),
                "reference": ("reference.parquet", to_parquet(reference)),
            }
            return requests.post(f"{gunicorn.base}/v1/models/{name}/versions", files=files, headers=headers)

        response = upload("onnx-e2e", artifact)
        assert response.status_code == 201, response.text
        assert response.json()["artifact_sha256"] == hashlib.sha256(artifact).hexdigest()
        big = upload("onnx-big", artifact + b"\0" * 100_000)
        assert big.status_code == 422 and big.headers["Content-Type"].startswith(PROBLEM), big.text
        assert "at most 100000 bytes" in big.json()["errors"]["artifact"][0]

        rows = rows_of("onnx-credit", 20)
        expected = oracle("onnx-credit").predict_proba(pd.DataFrame(rows))
        base = f"{gunicorn.base}/v1/models/onnx-e2e/versions/1"
        for _ in range(4):  # both workers load and answer
            answer = requests.post(f"{base}/predict", json={"instances": rows}, headers=headers).json()
            got = [[p["probabilities"][c] for c in manifest["classes"]] for p in answer["predictions"]]
            np.testing.assert_array_equal(got, expected)
        body = {"instances": rows[:2], "max_evals": 64, "background_rows": 20}
        shap_answer = requests.post(f"{base}/explain/shap", json=body, headers=headers)
        assert shap_answer.status_code == 200, shap_answer.text
        for result in shap_answer.json()["results"]:
            total = result["base_value"] + sum(a["attribution"] for a in result["attributions"])
            assert total == pytest.approx(result["output_value"], abs=1e-9)

"""Open Inference Protocol V2 (KServe V2) over the real app, on SQLite and PostgreSQL: health, metadata,
infer in both tensor layouts (checked against V1 predict), the explain extension (checked against V1 SHAP and
recorded), errors as JSON with the ``error`` member KServe clients read, and access like V1."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import bearer
from flask import Flask
from flask.testing import FlaskClient
from stored_files import stored_files
from test_audit import loan_rows

LOAN = "/v2/models/loan"
BYTES_FEATURES = 13  # the loan demo: 13 categorical features, 7 numeric


def loan_manifest(app: Flask) -> Any:
    return app.extensions["candor"].store.registry.resolve("loan", "production").manifest


def per_feature(app: Flask, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One input per feature, with the datatype the metadata names."""
    inputs = []
    for spec in loan_manifest(app).features:
        datatype = "FP64" if spec.type == "numeric" else "BYTES"
        inputs.append(
            {
                "name": spec.name,
                "shape": [len(rows)],
                "datatype": datatype,
                "data": [r[spec.name] for r in rows],
            }
        )
    return inputs


def one_tensor(app: Flask, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """All features in one BYTES tensor [n, features], numbers as text, nested by row."""
    order = loan_manifest(app).feature_names
    data = [[str(row[name]) for name in order] for row in rows]
    return {"name": "input-0", "shape": [len(rows), len(order)], "datatype": "BYTES", "data": data}


def v1_predictions(client: FlaskClient, auth: dict[str, str], rows: list[dict[str, Any]]) -> list[Any]:
    response = client.post(
        "/v1/models/loan/versions/production/predict", json={"instances": rows}, headers=auth
    )
    assert response.status_code == 200
    return response.get_json()["predictions"]  # type: ignore[no-any-return]


def outputs(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tensor["name"]: tensor for tensor in body["outputs"]}


def test_health_routes_are_public_and_answer_as_oip(client: FlaskClient) -> None:
    assert client.get("/v2/health/live").get_json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True}


@pytest.mark.parametrize("path", ["/v2", f"{LOAN}", f"{LOAN}/ready", f"{LOAN}/versions/1/ready"])
def test_other_v2_routes_need_a_key_and_say_why_in_error(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json"  # what the KServe SDK parses
    body = response.get_json()
    assert body["error"] and body["status"] == 401 and body["title"] == "Unauthorized"


def test_server_and_model_metadata(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    server = client.get("/v2", headers=auth).get_json()
    assert server["name"] == "candor" and server["extensions"] == ["explain"]
    meta = client.get(LOAN, headers=auth).get_json()
    manifest = loan_manifest(app)
    assert [t["name"] for t in meta["inputs"]] == manifest.feature_names
    types = {t["name"]: t["datatype"] for t in meta["inputs"]}
    assert types["duration_in_month"] == "FP64" and types["purpose"] == "BYTES"
    assert sum(t == "BYTES" for t in types.values()) == BYTES_FEATURES
    assert meta["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
    ]
    assert meta["versions"] == ["1"] and meta["platform"] == "candor-tabular"
    assert client.get(f"{LOAN}/versions/production", headers=auth).get_json() == meta
    assert client.get(f"{LOAN}/ready", headers=auth).get_json() == {"name": "loan", "ready": True}


@pytest.mark.parametrize("layout", ["per_feature", "one_tensor"])
def test_infer_matches_v1_predict(app: Flask, client: FlaskClient, auth: dict[str, str], layout: str) -> None:
    rows = loan_rows(3)
    inputs = per_feature(app, rows) if layout == "per_feature" else [one_tensor(app, rows)]
    response = client.post(f"{LOAN}/infer", json={"id": "req-1", "inputs": inputs}, headers=auth)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("loan", "1", "req-1")
    expected = v1_predictions(client, auth, rows)
    tensors = outputs(body)
    assert tensors["label"]["data"] == [p["label"] for p in expected]
    probabilities = tensors["probabilities"]
    classes = list(expected[0]["probabilities"])
    assert (
        probabilities["shape"] == [3, 2]
        and probabilities["parameters"]["classes"] == f'["{classes[0]}","{classes[1]}"]'
    )
    assert probabilities["data"] == [p["probabilities"][c] for p in expected for c in classes]


def test_infer_numeric_model_takes_one_fp32_tensor(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    registry = app.extensions["candor"].store.registry
    features = registry.resolve("clinical", "production").manifest.feature_names
    model = registry.load(registry.resolve("clinical", "production"))
    rows = model.reference.head(2)[features].to_numpy().tolist()
    tensor = {
        "name": "x",
        "shape": [2, len(features)],
        "datatype": "FP32",
        "data": [value for row in rows for value in row],
    }
    body = {"inputs": [tensor], "outputs": [{"name": "label"}]}
    response = client.post("/v2/models/clinical/versions/1/infer", json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    assert [t["name"] for t in response.get_json()["outputs"]] == ["label"]
    v1 = client.post("/v1/models/clinical:predict", json={"instances": rows}, headers=auth).get_json()
    assert response.get_json()["outputs"][0]["data"] == v1["predictions"]


def test_explain_extension_matches_v1_shap_and_is_recorded(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    rows = loan_rows(2)
    request = {"inputs": per_feature(app, rows), "parameters": {"seed": 3}}
    response = client.post(f"{LOAN}/explain", json=request, headers={**auth, "Idempotency-Key": "k-1"})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    record_id = body["parameters"]["explanation_id"]
    record = app.extensions["candor"].store.audit.get(record_id)
    assert record["kind"] == "shap" and record["request"]["instances"] == rows
    v1 = client.post(
        "/v1/models/loan/versions/1/explain/shap",
        json={"instances": rows, "seed": 3, "layout": "columnar"},
        headers=auth,
    ).get_json()
    tensors = outputs(body)
    attributions = tensors["attributions"]
    assert attributions["shape"] == [2, 20]
    assert attributions["parameters"]["feature_order"].startswith('["status_of_existing_checking_account"')
    assert attributions["data"] == pytest.approx([v for r in v1["results"] for v in r["attribution_values"]])
    assert tensors["base_value"]["data"] == pytest.approx([r["base_value"] for r in v1["results"]])
    assert tensors["label"]["data"] == [r["prediction"]["label"] for r in v1["results"]]
    again = client.post(f"{LOAN}/explain", json=request, headers={**auth, "Idempotency-Key": "k-1"})
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["parameters"]["explanation_id"] == record_id


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda inputs: inputs[:-1], "inputs"),
        (lambda inputs: [{**inputs[0], "data": inputs[0]["data"][:1]}, *inputs[1:]], "inputs.0.data"),
        (lambda inputs: [{**inputs[0], "datatype": "INT64"}, *inputs[1:]], "inputs.0.data.0"),
        (lambda inputs: [{**inputs[0], "name": "nope"}, *inputs[1:]], "inputs.0.name"),
        (lambda inputs: [*inputs, inputs[0]], "inputs.20.name"),
        (lambda inputs: [{**inputs[0], "shape": [2, 2]}, *inputs[1:]], "inputs.0.shape"),
    ],
    ids=["missing-feature", "short-data", "wrong-datatype", "unknown-name", "twice", "bad-shape"],
)
def test_bad_tensors_are_422_naming_the_input(
    app: Flask, client: FlaskClient, auth: dict[str, str], change: Any, field: str
) -> None:
    inputs = change(per_feature(app, loan_rows(2)))
    response = client.post(f"{LOAN}/infer", json={"inputs": inputs}, headers=auth)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert field in body["errors"] and field in body["error"]


def test_model_check_errors_reach_error_and_problem_json_on_request(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    inputs = per_feature(app, [{**loan_rows(1)[0], "purpose": "yacht"}])
    response = client.post(f"{LOAN}/infer", json={"inputs": inputs}, headers=auth)
    assert response.status_code == 422 and "instances.0.purpose" in response.get_json()["error"]
    negotiated = client.post(
        f"{LOAN}/infer", json={"inputs": inputs}, headers={**auth, "Accept": "application/problem+json"}
    )
    assert negotiated.mimetype == "application/problem+json" and negotiated.get_json()["error"]


def test_explain_parameters_are_shap_options(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    inputs = per_feature(app, loan_rows(1))
    body = {"inputs": inputs, "parameters": {"seed": "three", "binary_data_output": True}}
    response = client.post(f"{LOAN}/explain", json=body, headers=auth)
    assert response.status_code == 422
    assert {"parameters.seed", "parameters.binary_data_output"} <= set(response.get_json()["errors"])
    assert app.extensions["candor"].store.audit.count() == 0


def test_unknown_models_and_routes_are_404_json(client: FlaskClient, auth: dict[str, str]) -> None:
    for path in ("/v2/models/ghost", "/v2/models/loan/versions/9", "/v2/nothing"):
        response = client.get(path, headers=auth)
        assert response.status_code == 404 and response.headers["Content-Type"] == "application/json"
        assert response.get_json()["error"]


def test_model_allowlist_and_scope_apply(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    store = app.extensions["candor"].store
    clinical_only, _ = store.keys.create("clinical-only", ["explain"], models=["clinical"])
    body = {"inputs": per_feature(app, loan_rows(1))}
    for path in (LOAN, f"{LOAN}/ready", f"{LOAN}/infer", f"{LOAN}/versions/1/explain"):
        method = client.post if path.endswith(("infer", "explain")) else client.get
        kwargs = {"json": body} if method == client.post else {}
        response = method(path, headers=bearer(clinical_only), **kwargs)
        assert response.status_code == 404, path
    denied = client.post(f"{LOAN}/infer", json=body, headers=bearer(keys["audit:read"]))
    assert denied.status_code == 403 and "explain" in denied.get_json()["error"]


def test_binary_tensor_bodies_are_refused(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        f"{LOAN}/infer", data=b"{}", headers={**auth, "Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 415 and response.get_json()["error"]


@pytest.mark.parametrize(
    "operation", ["infer", "versions/{version}/infer", "explain", "versions/{version}/explain"]
)
def test_the_contract_examples_reach_the_model(
    app: Flask, client: FlaskClient, auth: dict[str, str], operation: str
) -> None:
    """The OpenAPI examples are valid requests for the demo model, so fuzzers reach inference and SHAP."""
    spec = client.get("/v1/openapi.json").get_json()
    path = f"/v2/models/{{name}}/{operation}"
    body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
    url = path.replace("{name}", "loan").replace("{version}", "production")
    response = client.post(url, json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    recorded = app.extensions["candor"].store.audit.count()
    assert recorded == (1 if operation.endswith("explain") else 0)


def test_a_model_that_cannot_load_is_not_ready(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    store = app.extensions["candor"].store
    info = store.registry.resolve("loan", "production")
    artifact = next(iter(stored_files(store, info).values()))
    artifact.write_bytes(b"tampered")
    server = client.get("/v2/health/ready")
    assert server.status_code == 503 and server.headers["Content-Type"] == "application/json"
    assert "cannot be loaded" in server.get_json()["error"]
    model = client.get(f"{LOAN}/ready", headers=auth)
    assert model.status_code == 503 and "version 1 cannot be loaded" in model.get_json()["error"]
    assert client.get("/v2/models/clinical/ready", headers=auth).status_code == 200


def test_a_one_field_error_is_named_once(client: FlaskClient, auth: dict[str, str], app: Flask) -> None:
    body = {"inputs": per_feature(app, loan_rows(1)), "outputs": [{"name": "shap"}]}
    error = client.post(f"{LOAN}/infer", json=body, headers=auth).get_json()["error"]
    assert error.count("outputs.0.name") == 1 and "Unknown output" in error

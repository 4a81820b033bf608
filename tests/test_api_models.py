"""REST model registry: multipart registration, scopes, manifest/artifact mismatches as RFC 9457 problems,
nothing lost on failure, promotion, and integrity failures surfaced as problems."""

from __future__ import annotations

import copy
import hashlib
import io
import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from stored_files import stored_files
from tiny_models import (
    COLOURS,
    FEATURES,
    category_never_seen,
    classes_reversed,
    feature_not_read,
    feature_undeclared,
    reference_missing_column,
    tiny_frame,
    tiny_manifest,
    tiny_pipeline,
)

from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

PROBLEM = "application/problem+json"


_FRAME = tiny_frame(seed=2)
_PIPELINE = tiny_pipeline(_FRAME)
_ARTIFACT = dump_skops(_PIPELINE)
_REFERENCE = to_parquet(_FRAME)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(
    client: FlaskClient,
    token: str,
    name: str = "tiny",
    manifest: dict[str, Any] | str | None = None,
    artifact: bytes | None = _ARTIFACT,
    reference: bytes | None = _REFERENCE,
    reference_filename: str = "reference.parquet",
):
    if manifest is None:
        manifest = tiny_manifest(name)
    data: dict[str, Any] = {"manifest": manifest if isinstance(manifest, str) else json.dumps(manifest)}
    if artifact is not None:
        data["artifact"] = (io.BytesIO(artifact), "model.skops")
    if reference is not None:
        data["reference"] = (io.BytesIO(reference), reference_filename)
    return client.post(
        f"/v1/models/{name}/versions", data=data, headers=bearer(token), content_type="multipart/form-data"
    )


def assert_problem(response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert {"type", "title", "status", "instance"} <= body.keys()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert body["instance"] == response.request.path
    if field is not None:
        assert field in body.get("errors", {}), body
        assert all(isinstance(m, str) and m for m in body["errors"][field])
    return body


def versions_of(client: FlaskClient, headers: dict[str, str], name: str) -> list[int] | None:
    response = client.get(f"/v1/models/{name}", headers=headers)
    if response.status_code == 404:
        return None
    assert response.status_code == 200
    return [v["version"] for v in response.get_json()["versions"]]


def artifact_dirs(app: Flask) -> set[str]:
    return {p.name for p in app.extensions["candor"].store.registry.artifacts.root.iterdir()}


# -- registration ------------------------------------------------------------------------------------------
def test_register_returns_the_version_detail(
    app: Flask, client: FlaskClient, keys: dict[str, str], auth: dict[str, str]
) -> None:
    response = upload(client, keys["models:write"])
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["name"] == "tiny"
    assert body["version"] == 1
    assert body["flavour"] == "tabular"
    assert body["stages"] == []
    assert body["artifact_sha256"] == hashlib.sha256(_ARTIFACT).hexdigest()
    assert len(body["reference_sha256"]) == 64
    assert body["feature_order"] == FEATURES
    assert "shap" in body["methods"]
    features = {f["name"]: f for f in body["manifest"]["features"]}
    assert features["colour"]["categories"] == COLOURS
    assert features["size"]["min"] == float(_FRAME["size"].min())
    assert features["weight"]["max"] == float(_FRAME["weight"].max())

    assert versions_of(client, auth, "tiny") == [1]
    assert client.get("/v1/models/tiny/versions/1", headers=auth).get_json() == body
    listed = {m["name"]: m for m in client.get("/v1/models", headers=auth).get_json()["models"]}
    assert listed["tiny"]["latest_version"] == 1
    assert listed["tiny"]["production_version"] is None

    row = _FRAME[FEATURES].iloc[0].to_dict()
    instance = {"size": float(row["size"]), "colour": str(row["colour"]), "weight": float(row["weight"])}
    predicted = client.post(
        "/v1/models/tiny/versions/1/predict", json={"instances": [instance]}, headers=auth
    )
    assert predicted.status_code == 200, predicted.get_data(as_text=True)
    probabilities = predicted.get_json()["predictions"][0]["probabilities"]
    expected = _PIPELINE.predict_proba(_FRAME[FEATURES].head(1))[0]
    assert probabilities == pytest.approx(dict(zip(["no", "yes"], expected, strict=True)), abs=1e-9)


def test_register_accepts_yaml_csv_and_a_manifest_without_name(
    client: FlaskClient, keys: dict[str, str], auth: dict[str, str]
) -> None:
    token = keys["models:write"]
    assert upload(client, token, manifest=yaml.safe_dump(tiny_manifest())).status_code == 201
    nameless = tiny_manifest()
    del nameless["name"]
    assert upload(client, token, manifest=nameless).status_code == 201
    csv = _FRAME.to_csv(index=False).encode()
    response = upload(client, token, reference=csv, reference_filename="reference.csv")
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["version"] == 3
    assert upload(client, keys["admin"]).get_json()["version"] == 4
    assert versions_of(client, auth, "tiny") == [1, 2, 3, 4]


@pytest.mark.parametrize("scope", ["explain", "audit:read"])
def test_register_needs_the_models_write_scope(
    app: Flask, client: FlaskClient, keys: dict[str, str], auth: dict[str, str], scope: str
) -> None:
    before = artifact_dirs(app)
    body = assert_problem(upload(client, keys[scope]), 403)
    assert "models:write" in body["detail"]
    assert versions_of(client, auth, "tiny") is None
    assert artifact_dirs(app) == before


# -- refused registrations ---------------------------------------------------------------------------------
def _name_mismatch(m: dict[str, Any], f: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    m["name"] = "other"
    return m, f


def _unknown_manifest_key(m: dict[str, Any], f: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    m["colour_map"] = {"red": "#f00"}
    return m, f


def _missing_task(m: dict[str, Any], f: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    del m["task"]
    return m, f


def _bad_feature_type(m: dict[str, Any], f: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    m["features"][2]["type"] = "float"
    return m, f


def _not_yaml(m: dict[str, Any], f: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    return "{name: [unclosed", f


def _not_a_mapping(m: dict[str, Any], f: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    return "- just\n- a list\n", f


REFUSED = [
    pytest.param(_name_mismatch, "manifest.name", id="name-mismatch"),
    pytest.param(classes_reversed, "classes", id="classes-order"),
    pytest.param(feature_undeclared, "features", id="undeclared-feature"),
    pytest.param(feature_not_read, "features", id="feature-not-read"),
    pytest.param(category_never_seen, "features.1.categories", id="category-never-seen"),
    pytest.param(reference_missing_column, "reference", id="reference-missing-column"),
    pytest.param(_unknown_manifest_key, "manifest.colour_map", id="unknown-manifest-key"),
    pytest.param(_missing_task, "manifest.task", id="missing-task"),
    pytest.param(_bad_feature_type, "manifest.features.2.type", id="bad-feature-type"),
    pytest.param(_not_yaml, "manifest", id="not-yaml"),
    pytest.param(_not_a_mapping, "manifest", id="not-a-mapping"),
]


@pytest.mark.parametrize(("mutate", "field"), REFUSED)
def test_refused_registration_is_a_problem_and_loses_nothing(
    app: Flask, client: FlaskClient, keys: dict[str, str], auth: dict[str, str], mutate, field: str
) -> None:
    token = keys["models:write"]
    assert upload(client, token).status_code == 201
    before = artifact_dirs(app)
    manifest, frame = mutate(copy.deepcopy(tiny_manifest()), _FRAME.copy())

    body = assert_problem(upload(client, token, manifest=manifest, reference=to_parquet(frame)), 422, field)
    assert body["instance"] == "/v1/models/tiny/versions"
    assert "Traceback" not in json.dumps(body)

    assert versions_of(client, auth, "tiny") == [1]
    assert versions_of(client, auth, "other") is None
    assert versions_of(client, auth, "loan") == [1]
    assert artifact_dirs(app) == before
    assert upload(client, token).get_json()["version"] == 2


@pytest.mark.parametrize(
    ("missing", "field"), [("artifact", "artifact"), ("reference", "reference"), ("manifest", "manifest")]
)
def test_missing_multipart_part_is_named(
    client: FlaskClient, keys: dict[str, str], auth: dict[str, str], missing: str, field: str
) -> None:
    data: dict[str, Any] = {
        "manifest": json.dumps(tiny_manifest()),
        "artifact": (io.BytesIO(_ARTIFACT), "model.skops"),
        "reference": (io.BytesIO(_REFERENCE), "reference.parquet"),
    }
    del data[missing]
    response = client.post(
        "/v1/models/tiny/versions",
        data=data,
        headers=bearer(keys["models:write"]),
        content_type="multipart/form-data",
    )
    assert_problem(response, 422, field)
    assert versions_of(client, auth, "tiny") is None


def test_unknown_form_field_is_refused(
    client: FlaskClient, keys: dict[str, str], auth: dict[str, str]
) -> None:
    response = client.post(
        "/v1/models/tiny/versions",
        data={
            "manifest": json.dumps(tiny_manifest()),
            "owner": "me",
            "artifact": (io.BytesIO(_ARTIFACT), "model.skops"),
            "reference": (io.BytesIO(_REFERENCE), "reference.parquet"),
        },
        headers=bearer(keys["models:write"]),
        content_type="multipart/form-data",
    )
    assert_problem(response, 422, "owner")
    assert versions_of(client, auth, "tiny") is None


def test_invalid_model_name_in_url_is_refused(client: FlaskClient, keys: dict[str, str]) -> None:
    assert_problem(upload(client, keys["models:write"], name="-dash-first"), 422, "name")
    assert_problem(upload(client, keys["models:write"], name="x" * 65), 422, "name")


@pytest.mark.parametrize(
    ("content_type", "payload"),
    [
        ("application/json", json.dumps({"manifest": "{}"})),
        ("application/x-www-form-urlencoded", "manifest=%7B%7D"),
        ("text/plain", "manifest"),
    ],
)
def test_upload_route_needs_multipart(
    client: FlaskClient, keys: dict[str, str], auth: dict[str, str], content_type: str, payload: str
) -> None:
    response = client.post(
        "/v1/models/loan/versions",
        data=payload,
        content_type=content_type,
        headers=bearer(keys["models:write"]),
    )
    body = assert_problem(response, 415)
    assert "multipart/form-data" in body["detail"]
    assert versions_of(client, auth, "loan") == [1]


def test_upload_limit_is_max_upload_bytes_not_max_body_bytes(make_app: Callable[..., Flask]) -> None:
    small_body = make_app(max_body_bytes=1024, max_upload_bytes=len(_ARTIFACT) + len(_REFERENCE) + 64_000)
    token = small_body.extensions["candor"].store.keys.create("w", ["models:write"])[0]
    assert upload(small_body.test_client(), token).status_code == 201

    small_upload = make_app(max_upload_bytes=len(_ARTIFACT) // 2)
    token = small_upload.extensions["candor"].store.keys.create("w", ["models:write"])[0]
    client = small_upload.test_client()
    assert_problem(upload(client, token), 413)
    registry = small_upload.extensions["candor"].store.registry
    assert [m["name"] for m in registry.list_models()] == ["clinical", "loan"]


# -- promotion ---------------------------------------------------------------------------------------------
def test_promote(client: FlaskClient, keys: dict[str, str], auth: dict[str, str]) -> None:
    writer = bearer(keys["models:write"])
    for _ in range(2):
        assert upload(client, keys["models:write"]).status_code == 201
    assert_problem(client.get("/v1/models/tiny/versions/production", headers=auth), 404)
    assert_problem(client.post("/v1/models/tiny/versions/1/promote", headers=auth), 403)

    response = client.post("/v1/models/tiny/versions/1/promote", headers=writer)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["stages"] == ["production"]
    assert client.get("/v1/models/tiny/versions/production", headers=auth).get_json()["version"] == 1
    assert client.get("/v1/models/tiny/versions/latest", headers=auth).get_json()["version"] == 2
    assert client.get("/v1/models/tiny/versions/latest", headers=auth).get_json()["stages"] == []

    assert_problem(client.post("/v1/models/tiny/versions/9/promote", headers=writer), 404)
    assert_problem(client.post("/v1/models/ghost/versions/1/promote", headers=writer), 404)
    assert client.get("/v1/models/tiny", headers=auth).get_json()["production_version"] == 1


# -- lookups -----------------------------------------------------------------------------------------------
def test_model_detail(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get("/v1/models/loan", headers=auth).get_json()
    assert body["name"] == "loan"
    assert body["latest_version"] == 1
    assert body["production_version"] == 1
    assert [(v["version"], v["stages"]) for v in body["versions"]] == [(1, ["production"])]
    detail = client.get("/v1/models/loan/versions/1", headers=auth).get_json()
    assert detail["manifest"]["classes"] == ["bad", "good"]
    assert len(detail["feature_order"]) == 20


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/ghost",
        "/v1/models/ghost/versions/1",
        "/v1/models/loan/versions/2",
        "/v1/models/loan/versions/0",
        "/v1/models/loan/versions/staging",
        "/v1/models/loan/versions/-1",
        "/v1/models/loan/versions/%C2%B2",  # superscript two: str.isdigit() is True, int() refuses it
    ],
)
def test_unknown_models_and_versions_are_404(client: FlaskClient, auth: dict[str, str], path: str) -> None:
    assert_problem(client.get(path, headers=auth), 404)


def test_corrupted_artifact_is_an_integrity_problem(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    """The app's model cache is cold: the first load reads the file and checks its sha256."""
    store = app.extensions["candor"].store
    info = store.registry.resolve("clinical", "1")
    path = stored_files(store, info)["model.skops"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))

    body = assert_problem(client.get("/v1/models/clinical/versions/1", headers=auth), 500)
    assert body["type"].endswith("/artifact-integrity")
    assert str(path.parent) not in json.dumps(body)
    assert path.name not in json.dumps(body)
    # the other model is unaffected
    assert client.get("/v1/models/loan/versions/1", headers=auth).status_code == 200

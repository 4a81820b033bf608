"""Every request is bounded before any work: the served contract gives every array a maxItems, every string
a maxLength, every integer a minimum and a maximum and every free-form object a maxProperties (walked
generically, so a new schema or route cannot forget), and the server refuses what those bounds refuse with a
422 naming the field: repeated entries in a set of names, integers past what the database stores, over-long
strings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import DATA, bearer
from flask import Flask
from flask.testing import FlaskClient
from test_api_auth import assert_problem

LOAN_ROW = json.loads((DATA / "loan_shap_request.json").read_text())["instances"][0]
LOAN = "/v1/models/loan/versions/1"
BODY_TYPES = ("application/json", "multipart/form-data")


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def unbounded(schema: dict[str, Any], where: str, components: dict[str, Any]) -> Iterator[str]:
    """Every place under ``schema`` that a client could make as large as it likes."""
    schema = _resolve(schema, components)
    for sub in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        yield from unbounded(sub, where, components)
    kind = schema.get("type")
    if kind == "array":
        if "maxItems" not in schema:
            yield f"{where}: array without maxItems"
        yield from unbounded(schema.get("items", {}), f"{where}[]", components)
    elif kind == "string":
        if "maxLength" not in schema and "enum" not in schema and schema.get("format") != "binary":
            yield f"{where}: string without maxLength"
    elif kind == "integer" and ("minimum" not in schema or "maximum" not in schema):
        yield f"{where}: integer without minimum and maximum"
    for name, prop in schema.get("properties", {}).items():
        yield from unbounded(prop, f"{where}.{name}", components)
    extra = schema.get("additionalProperties")
    if extra not in (None, False):
        if "maxProperties" not in schema:
            yield f"{where}: object without maxProperties"
        if isinstance(extra, dict):
            yield from unbounded(extra, f"{where}.*", components)


def request_parts(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every parameter's and request body's schema of every operation, with where it is."""
    for path, operations in document["paths"].items():
        shared = operations.get("parameters", [])
        for method, operation in operations.items():
            if method == "parameters":
                continue
            for parameter in shared + operation.get("parameters", []):
                yield f"{method} {path} {parameter['in']}:{parameter['name']}", parameter.get("schema", {})
            for media, content in operation.get("requestBody", {}).get("content", {}).items():
                yield f"{method} {path} body ({media})", content.get("schema", {})


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    return client.get("/v1/openapi.json").get_json()  # type: ignore[no-any-return]


def test_every_request_field_of_the_contract_is_bounded(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    parts = list(request_parts(document))
    assert len(parts) > 50 and any("body" in where for where, _ in parts)
    problems = [p for where, schema in parts for p in unbounded(schema, where, components)]
    assert problems == []


def test_the_walk_finds_what_is_unbounded() -> None:
    """The walker itself: each kind of unbounded field is reported, bounded ones are not."""
    components = {"Row": {"type": "object", "additionalProperties": {}}}
    schema = {
        "type": "object",
        "properties": {
            "names": {"type": "array", "items": {"type": "string", "maxLength": 5}},
            "name": {"type": "string"},
            "count": {"type": "integer", "minimum": 0},
            "rows": {"type": "array", "maxItems": 3, "items": {"$ref": "#/components/schemas/Row"}},
            "fine": {"type": "integer", "minimum": 0, "maximum": 9},
            "choice": {"type": "string", "enum": ["a"]},
        },
    }
    assert sorted(unbounded(schema, "b", components)) == [
        "b.count: integer without minimum and maximum",
        "b.name: string without maxLength",
        "b.names: array without maxItems",
        "b.rows[]: object without maxProperties",
    ]


def test_row_caps_in_the_contract_are_the_settings(make_app: Any) -> None:
    app = make_app(max_instances=7, max_cf_instances=3, max_text_instances=2)
    doc = app.test_client().get("/v1/openapi.json").get_json()
    schemas = doc["components"]["schemas"]

    def cap(path: str) -> int:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return int(_resolve(body, schemas)["properties"]["instances"]["maxItems"])

    base = "/v1/models/{name}/versions/{version}"
    assert cap(f"{base}/explain/shap") == cap(f"{base}/predict") == cap("/v1/models/{name}:explain") == 7
    assert cap(f"{base}/explain/counterfactuals") == cap(f"{base}/explain/reasons") == 3
    assert cap(f"{base}/explain/attention") == cap(f"{base}/explain/attributions") == 2


def _records(app: Flask) -> int:
    from sqlalchemy import func, select

    from model_store.tables import RecordRow

    with app.extensions["candor"].store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(RecordRow)) or 0)


def test_repeated_features_to_vary_are_refused_unrecorded(app: Flask, client: FlaskClient, auth: Any) -> None:
    """The red-team request: 200,000 copies of one name was accepted and stored as a 3.2 MB record."""
    before = _records(app)
    body = {"instances": [LOAN_ROW], "features_to_vary": ["credit_amount"] * 200_000}
    problem = assert_problem(client.post(f"{LOAN}/explain/counterfactuals", json=body, headers=auth), 422)
    assert "features_to_vary" in problem["errors"]
    body["features_to_vary"] = ["credit_amount", "duration_in_month", "credit_amount"]
    problem = assert_problem(client.post(f"{LOAN}/explain/counterfactuals", json=body, headers=auth), 422)
    assert problem["errors"]["features_to_vary"] == ["Duplicate entries: 'credit_amount'."]
    assert _records(app) == before


@pytest.mark.parametrize(
    "route,body,field",
    [
        ("explain/counterfactuals", {"features_to_vary": ["a"] * 5001}, "features_to_vary"),
        ("explain/counterfactuals", {"features_to_vary": ["x" * 129]}, "features_to_vary.0"),
        (
            "explain/counterfactuals",
            {"permitted_range": {f"f{i}": [0, 1] for i in range(5001)}},
            "permitted_range",
        ),
        (
            "explain/counterfactuals",
            {"permitted_range": {"credit_amount": list(range(10_001))}},
            "permitted_range",
        ),
        ("explain/counterfactuals", {"desired_class": "x" * 1025}, "desired_class"),
        ("explain/shap", {"target": "x" * 1025}, "target"),
        ("explain/attention", {"layers": [0, 1, 0]}, "layers"),
        ("explain/attention", {"heads": [0, 0]}, "heads"),
        ("explain/attention", {"layers": [2**31]}, "layers.0"),
        ("explain/attention", {"heads": [-1]}, "heads.0"),
        ("predict", {}, "instances.0"),
    ],
)
def test_over_bound_bodies_are_422_naming_the_field(
    client: FlaskClient, auth: Any, route: str, body: dict[str, Any], field: str
) -> None:
    row = {f"k{i}": 1 for i in range(5001)} if route == "predict" else LOAN_ROW
    response = client.post(f"{LOAN}/{route}", json={"instances": [row], **body}, headers=auth)
    problem = assert_problem(response, 422)
    assert any(key == field or key.startswith(f"{field}.") for key in problem["errors"]), problem


def test_key_sets_refuse_repeats(client: FlaskClient, keys: dict[str, str]) -> None:
    admin = bearer(keys["admin"])
    for body, field in (
        ({"name": "k", "scopes": ["explain", "explain"]}, "scopes"),
        ({"name": "k", "scopes": ["explain"], "models": ["loan", "loan"]}, "models"),
    ):
        problem = assert_problem(client.post("/v1/keys", json=body, headers=admin), 422)
        assert field in problem["errors"]


def test_job_options_are_bounded(client: FlaskClient, keys: dict[str, str]) -> None:
    admin = bearer(keys["admin"])
    body = {
        "model": "loan",
        "kind": "shap",
        "dataset": "reference",
        "options": {f"o{i}": 1 for i in range(65)},
    }
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=admin), 422)
    assert "options" in problem["errors"]
    body = {"model": "loan", "kind": "shap", "dataset": "reference", "version": "1" * 10}
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=admin), 422)
    assert "version" in problem["errors"]


@pytest.mark.parametrize("route", ["/v1/explanations", "/v1/explanations/export"])
@pytest.mark.parametrize("version", ["9223372036854775808", "2147483648", "0", "-1"])
def test_out_of_range_record_versions_are_422(
    client: FlaskClient, keys: dict[str, str], route: str, version: str
) -> None:
    """A version past 64 bits was a 500 (on /export from inside the stream); past 32 bits the database cannot
    hold it either."""
    response = client.get(route, query_string={"version": version}, headers=bearer(keys["audit:read"]))
    problem = assert_problem(response, 422)
    assert "version" in problem["errors"]
    ok = client.get(route, query_string={"version": str(2**31 - 1)}, headers=bearer(keys["audit:read"]))
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "query,field",
    [({"instance": 2**31}, "instance"), ({"layer": 4096}, "layer"), ({"head": 10**20}, "head")],
)
def test_out_of_range_plot_positions_are_422(
    client: FlaskClient, keys: dict[str, str], query: dict[str, Any], field: str
) -> None:
    response = client.get(
        "/v1/explanations/00000000-0000-0000-0000-000000000000/plot",
        query_string=query,
        headers=bearer(keys["audit:read"]),
    )
    problem = assert_problem(response, 422)
    assert field in problem["errors"]


@pytest.mark.parametrize("version", ["9223372036854775808", "2147483648", "1234567890"])
def test_out_of_range_path_versions_are_404(client: FlaskClient, auth: Any, version: str) -> None:
    """A version in the path is a resource name: past nine digits there is no such version."""
    for suffix in ("", "/profile", "/importance"):
        assert_problem(client.get(f"/v1/models/loan/versions/{version}{suffix}", headers=auth), 404)
    response = client.post(
        f"/v1/models/loan/versions/{version}/explain/shap", json={"instances": [LOAN_ROW]}, headers=auth
    )
    assert_problem(response, 404)


def test_over_long_datetimes_are_refused_unparsed(client: FlaskClient, keys: dict[str, str]) -> None:
    since = "2026-01-01T00:00:00" + "0" * 100 + "Z"
    response = client.get(
        "/v1/explanations", query_string={"since": since}, headers=bearer(keys["audit:read"])
    )
    assert "since" in assert_problem(response, 422)["errors"]

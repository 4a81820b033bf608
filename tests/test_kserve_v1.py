"""What the KServe SDK's V1 client reads: ``ready`` on ``GET /v1/models/{name}``, ``{"status": "alive"}``
at ``GET /`` (browsers still get the explorer), and a non-empty ``error`` in an ``application/json`` error
body."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from stored_files import stored_files
from test_audit import loan_rows

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_model_resource_says_ready(client: FlaskClient, auth: dict[str, str]) -> None:
    body = client.get("/v1/models/loan", headers=auth).get_json()
    assert body["ready"] is True


def test_model_resource_is_not_ready_when_its_version_cannot_load(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    store = app.extensions["candor"].store
    info = store.registry.resolve("loan", "production")
    artifact = next(iter(stored_files(store, info).values()))
    artifact.write_bytes(b"tampered")
    assert client.get("/v1/models/loan", headers=auth).get_json()["ready"] is False


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_root_answers_liveness_to_api_clients(client: FlaskClient, accept: str | None) -> None:
    response = client.get("/", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200 and response.get_json() == {"status": "alive"}
    assert "Accept" in response.headers["Vary"]


def test_root_still_serves_the_explorer_to_browsers(client: FlaskClient) -> None:
    response = client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert response.mimetype == "text/html" and "Accept" in response.headers["Vary"]


@pytest.mark.parametrize("verb", [":predict", ":explain"])
def test_kserve_verb_errors_carry_error_as_json(client: FlaskClient, auth: dict[str, str], verb: str) -> None:
    row = {**loan_rows(1)[0], "purpose": "yacht"}
    response = client.post(f"/v1/models/loan{verb}", json={"instances": [row]}, headers=auth)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/json"
    body = response.get_json()
    assert "instances.0.purpose" in body["error"] and body["errors"]["instances.0.purpose"]
    assert body["type"].endswith("/invalid-input") or body["title"]  # the RFC 9457 members stay


def test_kserve_verb_error_content_type_is_negotiable(client: FlaskClient) -> None:
    response = client.post(
        "/v1/models/loan:predict", json={"instances": []}, headers={"Accept": "application/problem+json"}
    )
    assert response.status_code == 401 and response.mimetype == "application/problem+json"
    assert response.get_json()["error"]


def test_other_routes_keep_plain_problem_documents(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/v1/models/ghost", headers=auth)  # Candor's model resource (also KServe's ready)
    assert response.mimetype == "application/problem+json" and "error" not in response.get_json()

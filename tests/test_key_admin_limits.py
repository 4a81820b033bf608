"""Key administration stays within the administering key's reach: an ``admin`` key limited to some models
creates, lists, reads, rotates and revokes only keys limited to (some of) those models."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import bearer
from flask import Flask
from flask.testing import FlaskClient
from test_api_auth import assert_problem


@pytest.fixture
def tokens(app: Flask) -> dict[str, str]:
    keys = app.extensions["candor"].store.keys
    made = {
        "admin": (["admin"], None),
        "loan admin": (["admin"], ["loan"]),
        "loan explain": (["explain"], ["loan"]),
        "clinical explain": (["explain"], ["clinical"]),
        "explain": (["explain"], None),
    }
    return {kind: keys.create(kind.replace(" ", "-"), *spec)[0] for kind, spec in made.items()}


def key_id(token: str) -> str:
    return token.split("_", 2)[1]


@pytest.mark.parametrize(
    "body",
    [
        {"name": "wide", "scopes": ["explain"]},
        {"name": "wide", "scopes": ["admin"]},
        {"name": "other", "scopes": ["explain"], "models": ["clinical"]},
        {"name": "both", "scopes": ["explain"], "models": ["loan", "clinical"]},
    ],
)
def test_a_model_limited_admin_cannot_create_a_key_beyond_its_models(
    app: Flask, client: FlaskClient, tokens: dict[str, str], body: dict[str, Any]
) -> None:
    before = len(app.extensions["candor"].store.keys.list())
    problem = assert_problem(client.post("/v1/keys", json=body, headers=bearer(tokens["loan admin"])), 403)
    assert "more than it has" in problem["detail"] or "must name its models" in problem["detail"]
    assert len(app.extensions["candor"].store.keys.list()) == before, "no key was created"


def test_omitting_models_is_refused_with_the_allowlist_named(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    body = {"name": "wide", "scopes": ["explain"]}
    problem = assert_problem(client.post("/v1/keys", json=body, headers=bearer(tokens["loan admin"])), 403)
    detail = "This key is limited to the models loan: a key it creates must name its models."
    assert problem["detail"] == detail


def test_a_model_limited_admin_creates_keys_within_its_models(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    body = {"name": "web", "scopes": ["admin"], "models": ["loan"]}
    created = client.post("/v1/keys", json=body, headers=bearer(tokens["loan admin"]))
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["models"] == ["loan"]
    body = {"name": "all", "scopes": ["explain"]}
    unlimited = client.post("/v1/keys", json=body, headers=bearer(tokens["admin"]))
    assert unlimited.status_code == 201 and unlimited.get_json()["models"] is None


@pytest.mark.parametrize("target", ["admin", "explain", "clinical explain"])
def test_a_model_limited_admin_cannot_rotate_revoke_or_read_keys_beyond_its_reach(
    client: FlaskClient, tokens: dict[str, str], target: str
) -> None:
    limited = bearer(tokens["loan admin"])
    target_id = key_id(tokens[target])
    assert_problem(client.post(f"/v1/keys/{target_id}/rotate", headers=limited), 404)
    assert_problem(client.delete(f"/v1/keys/{target_id}", headers=limited), 404)
    assert_problem(client.get(f"/v1/keys/{target_id}", headers=limited), 404)
    listed = client.get("/v1/keys", headers=limited).get_json()["keys"]
    assert target_id not in {k["key_id"] for k in listed}
    # the target's secret still works: it was neither rotated nor revoked
    assert client.get("/v1/models", headers=bearer(tokens[target])).status_code == 200


def test_a_model_limited_admin_administers_the_keys_within_its_reach(
    client: FlaskClient, tokens: dict[str, str]
) -> None:
    limited = bearer(tokens["loan admin"])
    listed = {k["name"] for k in client.get("/v1/keys", headers=limited).get_json()["keys"]}
    assert listed == {"loan-admin", "loan-explain"}
    target_id = key_id(tokens["loan explain"])
    assert client.get(f"/v1/keys/{target_id}", headers=limited).status_code == 200
    rotated = client.post(f"/v1/keys/{target_id}/rotate", headers=limited)
    assert rotated.status_code == 200 and rotated.get_json()["models"] == ["loan"]
    assert client.delete(f"/v1/keys/{target_id}", headers=limited).get_json()["revoked"] is True
    everything = client.get("/v1/keys", headers=bearer(tokens["admin"])).get_json()["keys"]
    names = {"admin", "loan-admin", "loan-explain", "clinical-explain", "explain"}
    assert {k["name"] for k in everything} == names

"""Access control beyond scopes: keys limited to some models (every route x every kind of key), key
administration over REST and the CLI, per-key rate limits, and path parameters that try to leave their
place."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from conftest import DATA, bearer
from flask import Flask
from flask.testing import FlaskClient
from test_api_auth import PUBLIC, SCOPES, assert_problem

from api.ops.cli import main as cli_main

LOAN_ROW = json.loads((DATA / "loan_shap_request.json").read_text())["instances"][0]
KINDS = {
    "explain": (["explain"], None),
    "models:write": (["models:write"], None),
    "audit:read": (["audit:read"], None),
    "admin": (["admin"], None),
    "loan explain": (["explain"], ["loan"]),
    "loan audit": (["audit:read"], ["loan"]),
    "loan admin": (["admin"], ["loan"]),
}
UNRESTRICTED_ONLY = {"/v1/audit/verify"}
"""Routes about every model at once: a key limited to some models gets a 403."""


@pytest.fixture
def kinds(app: Flask) -> dict[str, str]:
    keys = app.extensions["candor"].store.keys
    return {
        kind: keys.create(kind.replace(" ", "-"), scopes, models)[0]
        for kind, (scopes, models) in KINDS.items()
    }


def routes(app: Flask, model: str) -> list[tuple[str, str, str]]:
    """(method, rule, url) for every protected route, with ``model`` in the ``<name>`` parameter."""
    adapter = app.url_map.bind("localhost")
    table = []
    for rule in app.url_map.iter_rules():
        if rule.rule in PUBLIC:
            continue
        values = {arg: {"name": model, "version": "1"}.get(arg, "x") for arg in rule.arguments}
        for method in sorted((rule.methods or set()) - {"OPTIONS", "HEAD"}):
            table.append((method, rule.rule, adapter.build(rule.endpoint, values, method=method)))
    return table


def test_every_route_by_every_kind_of_key(app: Flask, client: FlaskClient, kinds: dict[str, str]) -> None:
    """The matrix: no scope (or a model allowlist on a route about every model) -> 403; a model outside the
    key's allowlist -> 404 as if it did not exist; otherwise the request reaches its view (neither 401/403
    nor a 404 about the model's existence)."""
    checked = 0
    for model in ("loan", "clinical"):
        for method, rule, url in routes(app, model):
            scope = SCOPES[(method, rule)]
            for kind, token in kinds.items():
                scopes, allowed = KINDS[kind]
                response = client.open(url, method=method, headers=bearer(token), json={})
                has_scope = scope in scopes or "admin" in scopes
                hidden = "<name>" in rule and allowed is not None and model not in allowed
                if not has_scope or (rule in UNRESTRICTED_ONLY and allowed is not None):
                    assert_problem(response, 403)
                elif hidden:
                    body = assert_problem(response, 404)
                    assert body["detail"] == f"Model '{model}' is not registered."
                else:
                    assert response.status_code not in (401, 403), (kind, method, url)
                    assert response.status_code < 500, (kind, method, url, response.data)
                checked += 1
    assert checked == 2 * len(routes(app, "loan")) * len(KINDS)


def test_a_model_limited_key_sees_only_its_models(
    app: Flask, client: FlaskClient, kinds: dict[str, str]
) -> None:
    listed = client.get("/v1/models", headers=bearer(kinds["loan explain"])).get_json()["models"]
    assert [m["name"] for m in listed] == ["loan"]
    everything = client.get("/v1/models", headers=bearer(kinds["explain"])).get_json()["models"]
    assert {m["name"] for m in everything} == {"loan", "clinical"}


def test_a_model_limited_audit_key_sees_only_those_records(
    app: Flask, client: FlaskClient, kinds: dict[str, str]
) -> None:
    loan = client.post(
        "/v1/models/loan/versions/1/explain/shap",
        json={"instances": [LOAN_ROW]},
        headers=bearer(kinds["explain"]),
    ).get_json()["id"]
    clinical_row = (
        app.extensions["candor"]
        .store.registry.load(app.extensions["candor"].store.registry.resolve("clinical", "1"))
        .reference.head(1)
    )
    clinical = client.post(
        "/v1/models/clinical/versions/1/explain/shap",
        json={"instances": json.loads(clinical_row.to_json(orient="records"))},
        headers=bearer(kinds["explain"]),
    ).get_json()["id"]
    limited = bearer(kinds["loan audit"])
    assert [i["id"] for i in client.get("/v1/explanations", headers=limited).get_json()["items"]] == [loan]
    exported = client.get("/v1/explanations/export", headers=limited).get_data(as_text=True).splitlines()
    assert [json.loads(line)["record"]["id"] for line in exported if '"record"' in line] == [loan]
    assert client.get(f"/v1/explanations/{loan}", headers=limited).status_code == 200
    assert_problem(client.get(f"/v1/explanations/{clinical}", headers=limited), 404)
    assert_problem(client.post(f"/v1/explanations/{clinical}/replay", headers=limited), 404)
    assert_problem(client.get(f"/v1/explanations/{clinical}/plot", headers=limited), 404)
    blob = assert_problem(client.get(f"/v1/explanations/{clinical}/blobs/{'0' * 64}", headers=limited), 404)
    assert blob["detail"] == f"No explanation record '{clinical}'."
    csv = client.get("/v1/explanations/export?format=csv", headers=limited).get_data(as_text=True)
    assert [line.split(",")[1] for line in csv.splitlines()[1:]] == [loan]
    everything = client.get("/v1/explanations", headers=bearer(kinds["audit:read"])).get_json()["items"]
    assert [i["id"] for i in everything] == [loan, clinical]


def test_verifying_the_chain_needs_a_key_without_a_model_allowlist(
    client: FlaskClient, kinds: dict[str, str]
) -> None:
    """The chain is one for every model: its verdict (counts, head) would tell a limited key of the others."""
    for kind in ("loan audit", "loan admin"):
        body = assert_problem(client.get("/v1/audit/verify", headers=bearer(kinds[kind])), 403)
        assert "without a model allowlist" in body["detail"]
        assert "head" not in body and "checked" not in body
    for kind in ("audit:read", "admin"):
        verdict = client.get("/v1/audit/verify", headers=bearer(kinds[kind]))
        assert verdict.status_code == 200 and verdict.get_json()["ok"] is True


# -- key administration -----------------------------------------------------------------------------------


def test_keys_are_created_listed_rotated_and_revoked_over_rest(
    client: FlaskClient, kinds: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = bearer(kinds["admin"])
    created = client.post(
        "/v1/keys", json={"name": "web", "scopes": ["explain"], "models": ["loan"]}, headers=admin
    )
    assert created.status_code == 201
    key = created.get_json()
    token, key_id = key["key"], key["key_id"]
    assert key["scopes"] == ["explain"] and key["models"] == ["loan"] and key["revoked"] is False
    assert client.get("/v1/models/loan", headers=bearer(token)).status_code == 200
    assert_problem(client.get("/v1/models/clinical", headers=bearer(token)), 404)

    listed = client.get("/v1/keys", headers=admin)
    assert key_id in [k["key_id"] for k in listed.get_json()["keys"]]
    assert token.split("_", 2)[2] not in listed.get_data(as_text=True)
    assert "key" not in client.get(f"/v1/keys/{key_id}", headers=admin).get_json()

    rotated = client.post(f"/v1/keys/{key_id}/rotate", headers=admin).get_json()
    assert rotated["key_id"] == key_id and rotated["key"] != token and rotated["rotated_at"]
    assert_problem(client.get("/v1/models/loan", headers=bearer(token)), 401)
    assert client.get("/v1/models/loan", headers=bearer(rotated["key"])).status_code == 200

    revoked = client.delete(f"/v1/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.get_json()["revoked"] is True
    assert_problem(client.get("/v1/models/loan", headers=bearer(rotated["key"])), 401)
    assert_problem(client.post(f"/v1/keys/{key_id}/rotate", headers=admin), 404)
    assert_problem(client.delete("/v1/keys/nope", headers=admin), 404)
    own = client.get("/v1/keys", headers=admin).get_json()["keys"]
    own_id = next(k["key_id"] for k in own if k["name"] == "admin")
    assert_problem(client.post(f"/v1/keys/{own_id}/rotate", headers=admin), 409)
    assert_problem(client.delete(f"/v1/keys/{own_id}", headers=admin), 409)
    assert client.get("/v1/keys", headers=admin).status_code == 200, "the admin key still works"

    secrets = [token.split("_", 2)[2], rotated["key"].split("_", 2)[2]]
    assert not any(secret in record.getMessage() for record in caplog.records for secret in secrets)


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "x", "scopes": ["root"]}, "scopes.0"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["explain"], "models": []}, "models"),
        ({"name": "x", "scopes": ["explain"], "models": ["../etc"]}, "models.0"),
        ({"name": "bad name!", "scopes": ["explain"]}, "name"),
        ({"scopes": ["explain"]}, "name"),
        ({"name": "x", "scopes": ["explain"], "owner": "me"}, "owner"),
    ],
)
def test_bad_key_requests_are_422_naming_the_field(
    client: FlaskClient, kinds: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/keys", json=body, headers=bearer(kinds["admin"]))
    assert assert_problem(response, 422)["errors"].keys() >= {field}


def test_cli_creates_model_limited_keys_and_rotates_them(
    app: Flask, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = app.extensions["candor"].settings
    monkeypatch.setenv("CANDOR_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CANDOR_DATABASE_URL", settings.resolved_database_url)
    assert cli_main(["keys", "create", "--name", "web", "--scopes", "explain", "--models", "loan"]) == 0
    token = capsys.readouterr().out.strip()
    keys = app.extensions["candor"].store.keys
    principal = keys.authenticate(token)
    assert principal is not None and principal.models == frozenset({"loan"})
    assert cli_main(["keys", "list"]) == 0
    assert f"{principal.key_id}\tweb\texplain\tloan\tactive" in capsys.readouterr().out
    assert cli_main(["keys", "rotate", principal.key_id]) == 0
    new_token = capsys.readouterr().out.strip()
    assert keys.authenticate(token) is None and keys.authenticate(new_token) == principal


# -- rate limits -------------------------------------------------------------------------------------------


def test_rate_limits_are_per_key_with_retry_after(make_app: Any) -> None:
    app = make_app(rate_limit="3/minute")
    client = app.test_client()
    keys = app.extensions["candor"].store.keys
    busy, quiet = keys.create("busy", ["explain"])[0], keys.create("quiet", ["explain"])[0]
    assert [client.get("/v1/models", headers=bearer(busy)).status_code for _ in range(3)] == [200] * 3
    limited = client.get("/v1/models", headers=bearer(busy))
    body = assert_problem(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "too many" in body["detail"].lower()
    assert client.get("/v1/models", headers=bearer(quiet)).status_code == 200
    assert client.get("/v1/health").status_code == 200  # probes are not limited


@pytest.mark.parametrize("rule", ["", "off"])
def test_an_empty_rule_or_off_turns_limits_off(make_app: Any, rule: str) -> None:
    from api.settings import Settings

    assert Settings.load(environ={"CANDOR_RATE_LIMIT": rule}).rate_limit == rule, "an empty variable counts"
    app = make_app(rate_limit=rule)
    token = app.extensions["candor"].store.keys.create("free", ["explain"])[0]
    client = app.test_client()
    assert {client.get("/v1/models", headers=bearer(token)).status_code for _ in range(50)} == {200}


# -- path parameters ---------------------------------------------------------------------------------------

TRAVERSALS = [
    "..",
    "%2e%2e",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f",
    "a%5c..%5cb",
    "%2fetc%2fpasswd",
    "..\\..\\x",
    "%00",
]


@pytest.mark.parametrize("attack", TRAVERSALS)
def test_path_parameters_that_try_to_leave_their_place_are_4xx(
    app: Flask, client: FlaskClient, kinds: dict[str, str], attack: str
) -> None:
    """Every name, version and id parameter of every route, given a traversal: a 4xx, never a 5xx, and the
    store is unchanged."""
    store = app.extensions["candor"].store
    before = (store.registry.list_models(), store.audit_log.integrate())
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.rule in PUBLIC:
            continue
        for argument in sorted(rule.arguments):
            values = {arg: {"name": "loan", "version": "1"}.get(arg, "x") for arg in rule.arguments}
            url = adapter.build(rule.endpoint, values).replace(f"/{values[argument]}", f"/{attack}", 1)
            for method in sorted((rule.methods or set()) - {"OPTIONS", "HEAD"}):
                response = client.open(url, method=method, headers=bearer(kinds["admin"]), json={})
                assert 400 <= response.status_code < 500, (method, url, response.status_code, response.data)
    assert (store.registry.list_models(), store.audit_log.integrate()) == before


@pytest.mark.parametrize(
    "path,body,field",
    [
        (
            "/v1/models/loan/versions/1/explain/shap",
            {"instances": [{**LOAN_ROW, "purpose": "car\u0000"}]},
            "instances.0.purpose",
        ),
        ("/v1/models/loan/versions/1/predict", {"instances": [{"a\u0000": 1}]}, "instances.0.a"),
        ("/v1/keys", {"name": "x", "scopes": ["explain\u0000"]}, "scopes.0"),
    ],
)
def test_nul_characters_are_refused_with_the_field_named(
    app: Flask, client: FlaskClient, kinds: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    """PostgreSQL cannot store NUL; every backend refuses it the same way, before anything is stored."""
    before = app.extensions["candor"].store.audit_log.integrate()
    response = client.post(path, json=body, headers=bearer(kinds["admin"]))
    problem = assert_problem(response, 422)
    assert list(problem["errors"]) == [field], problem
    query = client.get("/v1/explanations?model=lo%00an", headers=bearer(kinds["admin"]))
    assert "model" in assert_problem(query, 422)["errors"]
    assert app.extensions["candor"].store.audit_log.integrate() == before


@pytest.mark.parametrize("verb", ["predict", "explain"])
def test_a_kserve_verb_is_not_taken_for_a_model_name(
    client: FlaskClient, kinds: dict[str, str], verb: str
) -> None:
    """``/v1/models/<name>`` does not match ``loan:predict``: OPTIONS advertises the verb's POST only, and a
    GET is a 405 problem, not the lookup of a model called ``loan:predict``."""
    admin = bearer(kinds["admin"])
    options = client.options(f"/v1/models/loan:{verb}", headers=admin)
    assert options.status_code == 200
    assert {m.strip() for m in options.headers["Allow"].split(",")} == {"POST", "OPTIONS"}
    assert_problem(client.get(f"/v1/models/loan:{verb}", headers=admin), 405)
    model = client.options("/v1/models/loan", headers=admin).headers["Allow"]
    assert {m.strip() for m in model.split(",")} == {"GET", "HEAD", "OPTIONS"}
    assert client.get("/v1/models/loan", headers=admin).status_code == 200
    assert_problem(client.get("/v1/models/lo:an/versions/1", headers=admin), 404)

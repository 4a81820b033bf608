"""Access control, checked against the live route table: every route except the listed public ones answers
401 without a valid key, and each route needs exactly the scope listed here (a new route fails these tests
until it is reviewed and added)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.http.auth import required_scope
from api.methods.registry import NAMES, spec

PROBLEM = "application/problem+json"
PUBLIC = {
    "/v1/health",
    "/v1/ready",
    "/v1/openapi.yaml",
    "/v1/openapi.json",
    "/docs",
    "/docs/assets/<path:filename>",
    "/",
    "/explorer/<name>",
    "/v2/health/live",
    "/v2/health/ready",
}
SCOPES = {
    ("GET", "/v1/models"): "explain",
    ("GET", "/v1/models/<name>"): "explain",
    ("POST", "/v1/models/<name>/versions"): "models:write",
    ("GET", "/v1/models/<name>/versions/<version>"): "explain",
    ("POST", "/v1/models/<name>/versions/<version>/promote"): "models:write",
    ("POST", "/v1/models/<name>/versions/<version>/predict"): "explain",
    **{("POST", f"/v1/models/<name>/versions/<version>{spec(name).path}"): "explain" for name in NAMES},
    ("GET", "/v1/models/<name>/versions/<version>/importance"): "explain",
    ("GET", "/v1/models/<name>/versions/<version>/importance/plot"): "explain",
    ("GET", "/v1/models/<name>/versions/<version>/profile/plot"): "explain",
    ("GET", "/v1/models/<name>/versions/<version>/profile"): "explain",
    ("GET", "/v1/models/<name>/versions/<version>/segments"): "explain",
    ("POST", "/v1/models/<name>:predict"): "explain",
    ("POST", "/v1/models/<name>:explain"): "explain",
    ("GET", "/v1/explanations"): "audit:read",
    ("GET", "/v1/explanations/export"): "audit:read",
    ("GET", "/v1/explanations/<record_id>"): "audit:read",
    ("POST", "/v1/explanations/<record_id>/replay"): "audit:read",
    ("GET", "/v1/explanations/<record_id>/blobs/<digest>"): "audit:read",
    ("GET", "/v1/explanations/<record_id>/plot"): "audit:read",
    ("GET", "/v1/explanations/<record_id>/bertviz"): "audit:read",
    ("GET", "/v1/audit/verify"): "audit:read",
    ("GET", "/v1/audit/checkpoint"): "audit:read",
    ("GET", "/v1/audit/key"): "audit:read",
    ("GET", "/v1/audit/consistency"): "audit:read",
    ("GET", "/v1/explanations/<record_id>/proof"): "audit:read",
    ("GET", "/v1/metrics"): "admin",
    ("GET", "/v1/keys"): "admin",
    ("POST", "/v1/keys"): "admin",
    ("GET", "/v1/keys/<key_id>"): "admin",
    ("DELETE", "/v1/keys/<key_id>"): "admin",
    ("POST", "/v1/keys/<key_id>/rotate"): "admin",
    ("POST", "/v1/jobs"): "explain",
    ("GET", "/v1/jobs/<job_id>"): "explain",
    ("DELETE", "/v1/jobs/<job_id>"): "explain",
    ("GET", "/v1/jobs/<job_id>/result"): "explain",
    ("GET", "/v2"): "explain",
    ("GET", "/v2/models/<name>"): "explain",
    ("GET", "/v2/models/<name>/versions/<version>"): "explain",
    ("GET", "/v2/models/<name>/ready"): "explain",
    ("GET", "/v2/models/<name>/versions/<version>/ready"): "explain",
    ("POST", "/v2/models/<name>/infer"): "explain",
    ("POST", "/v2/models/<name>/versions/<version>/infer"): "explain",
    ("POST", "/v2/models/<name>/explain"): "explain",
    ("POST", "/v2/models/<name>/versions/<version>/explain"): "explain",
}
PATH_VALUES = {"name": "loan", "version": "1", "filename": "x"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def route_table(app: Flask) -> list[tuple[str, str, str, Any]]:
    """(method, rule, url, view) for every method of every rule; OPTIONS is Flask's automatic answer."""
    adapter = app.url_map.bind("localhost")
    table = []
    for rule in app.url_map.iter_rules():
        values = {arg: PATH_VALUES.get(arg, "x") for arg in rule.arguments}
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            url = adapter.build(rule.endpoint, values, method=method)
            table.append((method, rule.rule, url, app.view_functions[rule.endpoint]))
    return table


def protected(app: Flask) -> list[tuple[str, str, str]]:
    return [(m, r, u) for m, r, u, _ in route_table(app) if r not in PUBLIC]


def assert_problem(response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.request.method, response.request.path, response.data)
    path = response.request.path
    kserve = path.startswith("/v2") or path.endswith((":predict", ":explain"))
    assert response.mimetype == ("application/json" if kserve else PROBLEM)  # what KServe clients read
    if response.request.method == "HEAD":
        assert response.data == b""
        return {}
    body = response.get_json()
    assert {"type", "title", "status", "instance"} <= body.keys()
    assert body["status"] == status
    assert body["instance"] == response.request.path
    return body


def assert_unauthorized(response) -> None:
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


# -- the inventory -----------------------------------------------------------------------------------------
def test_route_inventory_is_reviewed(app: Flask) -> None:
    """Every route is either public (listed) or has exactly the scope listed in SCOPES."""
    rules = {r for _, r, _, _ in route_table(app)}
    assert rules >= PUBLIC, PUBLIC - rules
    scopes: dict[tuple[str, str], str | None] = {}
    for method, rule, _url, view in route_table(app):
        if method == "HEAD":
            continue
        scopes[(method, rule)] = required_scope(view)
    public = {rule for (_method, rule), scope in scopes.items() if scope is None}
    assert public == PUBLIC
    assert {key: scope for key, scope in scopes.items() if scope is not None} == SCOPES


def test_every_protected_route_answers_401_without_a_key(app: Flask, client: FlaskClient) -> None:
    table = protected(app)
    assert {(m, r) for m, r, _ in table if m != "HEAD"} == set(SCOPES)
    assert any(m == "HEAD" for m, _, _ in table), "GET routes are walked with HEAD too"
    for method, _rule, url in table:
        assert_unauthorized(client.open(url, method=method))
        if method == "POST":
            assert_unauthorized(client.open(url, method=method, json={"instances": [{}]}))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer cnd_abc_def",
        "Bearer cnd__",
        "Bearer cnd_../x_y",
        "Token {token}",
        "Basic {token}",
        "{token}",
        "Bearer {token}x",
        "Bearer {token_without_prefix}",
        "Bearer {revoked}",
    ],
)
def test_bad_credentials_answer_401_everywhere(
    app: Flask, client: FlaskClient, keys: dict[str, str], authorization: str
) -> None:
    store = app.extensions["candor"].store
    revoked, principal = store.keys.create("gone", ["admin"])
    assert store.keys.revoke(principal.key_id)
    token = keys["admin"]
    header = authorization.format(token=token, token_without_prefix=token[4:], revoked=revoked)
    for method, _rule, url in protected(app):
        assert_unauthorized(client.open(url, method=method, headers={"Authorization": header}))


def test_key_in_the_query_string_is_not_accepted(client: FlaskClient, keys: dict[str, str]) -> None:
    assert_unauthorized(client.get(f"/v1/models?api_key={keys['admin']}"))
    assert_unauthorized(client.get(f"/v1/models?access_token={keys['admin']}"))


def test_revoking_a_key_takes_effect_on_the_next_request(
    app: Flask, client: FlaskClient, auth: dict[str, str], keys: dict[str, str]
) -> None:
    store = app.extensions["candor"].store
    token, principal = store.keys.create("short-lived", ["explain"])
    assert client.get("/v1/models", headers=bearer(token)).status_code == 200
    store.keys.revoke(principal.key_id)
    assert_unauthorized(client.get("/v1/models", headers=bearer(token)))
    assert client.get("/v1/models", headers=auth).status_code == 200, "other keys keep working"


def test_scheme_is_case_insensitive(client: FlaskClient, keys: dict[str, str]) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        response = client.get("/v1/models", headers={"Authorization": f"{scheme} {keys['explain']}"})
        assert response.status_code == 200


# -- scopes ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["explain", "models:write", "audit:read"])
def test_each_route_needs_its_scope(
    app: Flask, client: FlaskClient, keys: dict[str, str], scope: str
) -> None:
    for method, rule, url in protected(app):
        needed = SCOPES[("GET" if method == "HEAD" else method, rule)]
        response = client.open(url, method=method, headers=bearer(keys[scope]))
        if needed == scope:
            assert response.status_code not in (401, 403), (method, url, response.data)
        else:
            body = assert_problem(response, 403)
            if method != "HEAD":
                assert needed in body["detail"]


def test_admin_key_reaches_every_route(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    for method, _rule, url in protected(app):
        response = client.open(url, method=method, headers=bearer(keys["admin"]))
        assert response.status_code not in (401, 403), (method, url, response.data)
        assert response.status_code < 500, (method, url, response.data)


def test_explain_key_cannot_register_or_promote(client: FlaskClient, auth: dict[str, str]) -> None:
    import io

    response = client.post(
        "/v1/models/loan/versions",
        data={
            "manifest": "{}",
            "artifact": (io.BytesIO(b"x"), "model.skops"),
            "reference": (io.BytesIO(b"x"), "reference.csv"),
        },
        content_type="multipart/form-data",
        headers=auth,
    )
    body = assert_problem(response, 403)
    assert "models:write" in body["detail"]
    assert_problem(client.post("/v1/models/loan/versions/1/promote", headers=auth), 403)
    models = client.get("/v1/models/loan", headers=auth).get_json()
    assert [v["version"] for v in models["versions"]] == [1]


def test_public_routes_answer_without_a_key(client: FlaskClient) -> None:
    assert client.get("/v1/health").status_code == 200
    ready = client.get("/v1/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "database": "ok"}
    assert client.get("/v1/openapi.yaml").status_code == 200
    assert client.get("/v1/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200

"""The published contract: the served OpenAPI document equals the committed ``openapi.yaml`` (regenerate it
with ``candor openapi > openapi.yaml``), it covers every route, every operation but the probes needs a key,
and the Swagger UI page loads only local assets."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from api.http.app import API_VERSION

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "openapi.yaml"
PUBLIC_OPERATIONS = {
    ("get", "/v1/health"),
    ("get", "/v1/ready"),
    ("get", "/v2/health/live"),
    ("get", "/v2/health/ready"),
}
NOT_IN_SPEC = {
    "/v1/openapi.yaml",
    "/v1/openapi.json",
    "/docs",
    "/docs/assets/<path:filename>",
    "/",  # the explorer page and its assets (static HTML, not API operations)
    "/explorer/<name>",
}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def served_spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/v1/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    return yaml.safe_load(response.get_data(as_text=True))


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_served_yaml_equals_the_committed_openapi_yaml(client: FlaskClient) -> None:
    assert COMMITTED.is_file(), "generate it: candor openapi > openapi.yaml"
    committed = yaml.safe_load(COMMITTED.read_text())
    served = served_spec(client)
    assert served == committed, "openapi.yaml is stale: regenerate it with `candor openapi > openapi.yaml`"


def test_json_and_yaml_documents_agree(client: FlaskClient) -> None:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == served_spec(client)


def test_document_header(client: FlaskClient) -> None:
    spec = served_spec(client)
    assert spec["openapi"] == "3.0.3"
    assert spec["info"]["title"] == "Candor"
    assert spec["info"]["version"] == API_VERSION
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}


def test_every_route_is_in_the_contract(app: Flask, client: FlaskClient) -> None:
    spec = served_spec(client)
    documented = {(method, path) for method, path, _ in operations(spec)}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule in NOT_IN_SPEC:
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            routed.add((method.lower(), path))
    assert routed == documented


def test_every_operation_but_the_probes_needs_a_key(client: FlaskClient) -> None:
    spec = served_spec(client)
    schemes = spec["components"]["securitySchemes"]
    global_security = spec.get("security", [])
    seen_public = set()
    for method, path, operation in operations(spec):
        effective = operation.get("security", global_security)
        if (method, path) in PUBLIC_OPERATIONS:
            assert effective == [], (method, path)
            seen_public.add((method, path))
            continue
        assert effective, f"{method.upper()} {path} has no security requirement"
        for requirement in effective:
            assert requirement, f"{method.upper()} {path} allows anonymous access"
            assert set(requirement) <= set(schemes)
    assert seen_public == PUBLIC_OPERATIONS


def test_request_bodies_match_the_content_types_the_server_takes(client: FlaskClient) -> None:
    spec = served_spec(client)
    bodies = {
        (method, path): set(operation["requestBody"]["content"])
        for method, path, operation in operations(spec)
        if "requestBody" in operation
    }
    assert bodies.pop(("post", "/v1/models/{name}/versions")) == {"multipart/form-data"}
    assert bodies.pop(("post", "/v1/jobs")) == {"multipart/form-data", "application/json"}
    assert bodies
    assert all(types == {"application/json"} for types in bodies.values()), bodies


def test_errors_are_documented_as_problems(client: FlaskClient) -> None:
    spec = served_spec(client)
    problem = spec["components"]["schemas"]["Problem"]
    assert {"type", "title", "status"} <= set(problem["required"])
    for method, path, operation in operations(spec):
        default = operation["responses"].get("default")
        assert default is not None, (method, path)
        for code, response in operation["responses"].items():
            if code.startswith(("4", "5")) or code == "default":
                text = yaml.safe_dump(response)
                assert "Problem" in text, (method, path, code)
                kserve = path.startswith("/v2") or path.endswith((":predict", ":explain"))
                if kserve and code != "414":  # a 414 is gunicorn's, before any route: a plain problem
                    assert "OipProblem" in text, (method, path, code)  # KServe clients read application/json
                    continue
                assert "application/json" not in response.get("content", {}), (method, path, code)


# -- Swagger UI --------------------------------------------------------------------------------------------
def test_docs_page_uses_only_local_assets(client: FlaskClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert references, html
    assert all(ref.startswith("/docs/assets/") for ref in references), references
    for ref in references:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.data, ref
        if ref.endswith(".js"):
            assert asset.mimetype in ("text/javascript", "application/javascript"), ref
            text = asset.get_data(as_text=True)
            assert "https://cdn" not in text and "unpkg.com" not in text, ref
        elif ref.endswith(".css"):
            assert asset.mimetype == "text/css", ref


def test_docs_init_script_loads_the_local_spec(client: FlaskClient) -> None:
    script = client.get("/docs/assets/init.js").get_data(as_text=True)
    urls = re.findall(r'url:\s*"([^"]+)"', script)
    assert urls == ["/v1/openapi.json"]
    assert client.get(urls[0]).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/nothing.js",
        "/docs/assets/../../pyproject.toml",
        "/docs/assets/%2e%2e/%2e%2e/pyproject.toml",
        "/docs/assets/..%2F..%2Fpyproject.toml",
        "/docs/assets/index.html",
        "/docs/assets/swagger-ui.css/",
    ],
)
def test_docs_assets_serve_only_the_listed_files(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, (path, response.data[:200])
    assert b"[tool" not in response.data


def test_unknown_docs_asset_is_a_problem_document(client: FlaskClient) -> None:
    """api/http/errors.py promises RFC 9457 problem documents for every error; the asset route too."""
    response = client.get("/docs/assets/nothing.js")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == 404
    assert body["instance"] == "/docs/assets/nothing.js"


@pytest.mark.parametrize(
    "path",
    ["/explorer/nothing.js", "/explorer/..%2Fexplorer.py", "/explorer/explorer.html", "/explorer/%2e%2e"],
)
def test_explorer_serves_only_its_own_assets(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_explorer_page_is_self_contained(client: FlaskClient) -> None:
    page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"})
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "http://" not in html and "https://" not in html
    for asset in re.findall(r'(?:src|href)="(/explorer/[^"]+)"', html):
        assert client.get(asset).status_code == 200, asset

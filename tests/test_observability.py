"""Observability: Prometheus metrics at /v1/metrics (admin only), request ids, JSON logs, readiness.

Metrics are process-wide (prometheus-client's registry), so every check compares a scrape before and after the
requests it makes: a counter must move by exactly the number of requests sent.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import _admin_execute
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from stored_files import stored_files

from model_store.artifacts import ARTIFACT_FILE

PROBLEM = "application/problem+json"
DATA = Path(__file__).parent / "data"
SHAP_REQUEST = json.loads((DATA / "loan_shap_request.json").read_text())
SHAP = "/v1/models/loan/versions/1/explain/shap"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def scrape(client: FlaskClient, admin: str) -> Samples:
    response = client.get("/v1/metrics", headers=bearer(admin))
    assert response.status_code == 200, response.data
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line the app wrote to stderr; each must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_key(app: Flask, scope: str) -> str:
    token, _principal = app.extensions["candor"].store.keys.create(f"obs-{scope.replace(':', '-')}", [scope])
    return token


# -- metrics -----------------------------------------------------------------------------------------------
def test_request_counters_move_by_exactly_the_requests_made(
    client: FlaskClient, keys: dict[str, str], auth: dict[str, str]
) -> None:
    version_route = "/v1/models/<name>/versions/<version>"
    before = scrape(client, keys["admin"])
    for _ in range(3):
        assert client.get("/v1/models/loan/versions/1", headers=auth).status_code == 200
    for _ in range(2):
        assert client.get("/v1/models/loan/versions/99", headers=auth).status_code == 404
    assert client.get("/v1/models/clinical/versions/1").status_code == 401
    for path in ("/nope", "/v1/models/loan/versions/1/nope", "/v1/../etc/passwd"):
        assert client.get(path, headers=auth).status_code == 404
    assert client.post(SHAP, json=SHAP_REQUEST, headers=auth).status_code == 200
    after = scrape(client, keys["admin"])

    requests = "candor_http_requests_total"
    assert delta(before, after, requests, route=version_route, method="GET", status="200") == 3
    assert delta(before, after, requests, route=version_route, method="GET", status="404") == 2
    assert delta(before, after, requests, route=version_route, method="GET", status="401") == 1
    assert delta(before, after, requests, route="unmatched", method="GET", status="404") == 3
    shap_route = "/v1/models/<name>/versions/<version>/explain/shap"
    assert delta(before, after, requests, route=shap_route, method="POST", status="200") == 1
    assert delta(before, after, requests, route="/v1/metrics", method="GET", status="200") == 1  # the first
    durations = "candor_http_request_duration_seconds_count"
    assert delta(before, after, durations, route=version_route, method="GET") == 6
    assert delta(before, after, durations, route="unmatched", method="GET") == 3
    assert (
        delta(before, after, "candor_http_request_duration_seconds_sum", route=shap_route, method="POST") > 0
    )
    routes = {dict(labels).get("route") for (name, labels) in after if name == requests}
    assert not any("loan" in r or "nope" in r or ".." in r for r in routes if r), routes


def test_explanation_load_and_cache_metrics_observe_the_work_done(make_app: Callable[..., Flask]) -> None:
    """A fresh app has nothing loaded: the first explanation loads the model (a miss), the second hits."""
    app = make_app()
    client, admin, explain = app.test_client(), make_key(app, "admin"), make_key(app, "explain")
    before = scrape(client, admin)
    assert client.post(SHAP, json=SHAP_REQUEST, headers=bearer(explain)).status_code == 200
    middle = scrape(client, admin)
    assert client.post(SHAP, json=SHAP_REQUEST, headers=bearer(explain)).status_code == 200
    after = scrape(client, admin)

    assert delta(before, middle, "candor_model_load_seconds_count", flavour="tabular") == 1
    assert delta(before, middle, "candor_model_load_seconds_sum", flavour="tabular") > 0
    assert delta(middle, after, "candor_model_load_seconds_count", flavour="tabular") == 0
    assert delta(before, middle, "candor_model_cache_total", result="miss") == 1
    assert delta(before, middle, "candor_model_cache_total", result="hit") == 0
    assert delta(middle, after, "candor_model_cache_total", result="miss") == 0
    assert delta(middle, after, "candor_model_cache_total", result="hit") == 1
    assert delta(before, after, "candor_explanation_seconds_count", method="shap") == 2
    assert delta(before, after, "candor_explanation_seconds_sum", method="shap") > 0
    assert value(after, "candor_explanation_seconds_bucket", method="shap", le="+Inf") >= 2


def test_job_queue_depth_counts_queued_jobs_at_scrape_time(client: FlaskClient, keys: dict[str, str]) -> None:
    explain = bearer(keys["explain"])
    assert value(scrape(client, keys["admin"]), "candor_job_queue_depth") == 0
    submitted = []
    for _ in range(2):
        response = client.post(
            "/v1/jobs", json={"model": "loan", "kind": "shap", "dataset": "reference"}, headers=explain
        )
        assert response.status_code in (200, 201, 202), response.get_json()
        assert response.get_json()["status"] == "queued"
        submitted.append(response.get_json()["id"])
    assert value(scrape(client, keys["admin"]), "candor_job_queue_depth") == 2
    cancelled = client.delete(f"/v1/jobs/{submitted[0]}", headers=explain)
    assert cancelled.status_code in (200, 202) and cancelled.get_json()["status"] == "cancelled"
    assert value(scrape(client, keys["admin"]), "candor_job_queue_depth") == 1


def test_metrics_need_the_admin_scope(client: FlaskClient, keys: dict[str, str]) -> None:
    anonymous = client.get("/v1/metrics")
    assert anonymous.status_code == 401 and anonymous.mimetype == PROBLEM
    for scope in ("explain", "models:write", "audit:read"):
        response = client.get("/v1/metrics", headers=bearer(keys[scope]))
        assert response.status_code == 403 and response.mimetype == PROBLEM, scope
        assert b"candor_http_requests_total" not in response.data
    admitted = client.get("/v1/metrics", headers=bearer(keys["admin"]))
    assert admitted.status_code == 200
    assert admitted.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE candor_http_requests_total counter" in admitted.get_data(as_text=True)


# -- request ids -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sent", ["abc", "req-1.2_3:4", "A" * 128, "0"])
def test_a_valid_request_id_is_echoed_on_success_and_in_problems(
    client: FlaskClient, auth: dict[str, str], sent: str
) -> None:
    ok = client.get("/v1/models", headers={**auth, "X-Request-ID": sent})
    assert ok.status_code == 200 and ok.headers["X-Request-ID"] == sent
    for response in (
        client.get("/v1/models/nope", headers={**auth, "X-Request-ID": sent}),  # 404 from the domain
        client.get("/v1/models", headers={"X-Request-ID": sent}),  # 401 from the auth hook
        client.post(SHAP, data="{", content_type="application/json", headers={**auth, "X-Request-ID": sent}),
        client.get("/not/a/route", headers={"X-Request-ID": sent}),
    ):
        assert response.mimetype == PROBLEM
        assert response.headers["X-Request-ID"] == sent
        assert response.get_json()["request_id"] == sent


@pytest.mark.parametrize("sent", ["", "has space", "A" * 129, "a/b", "ünï", "x;y", "id\tx"])
def test_an_invalid_request_id_is_replaced_by_a_generated_one(client: FlaskClient, sent: str) -> None:
    response = client.get("/v1/health", headers={"X-Request-ID": sent})
    assert response.status_code == 200
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])
    assert response.headers["X-Request-ID"] != sent


def test_request_ids_are_generated_per_request(client: FlaskClient) -> None:
    ids = {client.get("/v1/health").headers["X-Request-ID"] for _ in range(5)}
    ids |= {client.get("/v1/models").get_json()["request_id"] for _ in range(5)}
    assert len(ids) == 10 and all(GENERATED_ID.fullmatch(i) for i in ids)


# -- logs --------------------------------------------------------------------------------------------------
def test_access_lines_are_json_with_the_request_id_and_no_secret_or_body(
    app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    token, principal = app.extensions["candor"].store.keys.create("logged", ["explain"])
    secret = token.split("_", 2)[2]
    marker = "do-not-log-this-input-7f3a"
    capsys.readouterr()
    bad = client.post(
        SHAP,
        json={"instances": [{"purpose": marker}], "note": marker},
        headers={**bearer(token), "X-Request-ID": "log-check-1"},
    )
    assert bad.status_code == 422
    good = client.post(SHAP, json=SHAP_REQUEST, headers={**bearer(token), "X-Request-ID": "log-check-2"})
    assert good.status_code == 200
    wrong = client.get("/v1/models", headers={"Authorization": f"Bearer cnd_{principal.key_id}_{marker}"})
    assert wrong.status_code == 401
    written = capsys.readouterr().err

    lines = json_lines(written)
    for line in lines:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    access = {line["request_id"]: line for line in lines if line["logger"] == "candor.access"}
    route = "/v1/models/<name>/versions/<version>/explain/shap"
    assert access["log-check-1"]["status"] == 422
    assert access["log-check-2"] | {"time": None, "duration_ms": None} == {
        "time": None,
        "level": "INFO",
        "logger": "candor.access",
        "message": f"POST {route} 200",
        "request_id": "log-check-2",
        "method": "POST",
        "route": route,
        "status": 200,
        "duration_ms": None,
        "key_id": principal.key_id,
    }
    assert access["log-check-2"]["duration_ms"] > 0
    assert access[wrong.headers["X-Request-ID"]]["key_id"] is None
    assert secret not in written and token not in written
    assert marker not in written and "Authorization" not in written and "5951" not in written


def test_an_unexpected_error_is_a_bare_500_problem_and_a_logged_traceback(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()
    boom = Blueprint("boom", __name__)

    @boom.get("/v1/test-only/boom")
    def explode() -> None:
        raise RuntimeError("internal detail: /srv/secret/path.py")

    app.register_blueprint(boom)
    admin = make_key(app, "admin")
    capsys.readouterr()
    response = app.test_client().get(
        "/v1/test-only/boom", headers={**bearer(admin), "X-Request-ID": "boom-1"}
    )
    written = capsys.readouterr().err

    assert response.status_code == 500 and response.mimetype == PROBLEM
    assert response.headers["X-Request-ID"] == "boom-1"
    body = response.get_json()
    assert body["request_id"] == "boom-1" and body["status"] == 500
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "RuntimeError", "internal detail", "/srv/secret", ".py", "site-packages"):
        assert leak not in text, leak
    errors = [line for line in json_lines(written) if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["request_id"] == "boom-1" and errors[0]["logger"] == "candor.errors"
    assert "Traceback" in errors[0]["exception"]
    assert "RuntimeError: internal detail: /srv/secret/path.py" in errors[0]["exception"]
    access = [line for line in json_lines(written) if line["logger"] == "candor.access"]
    assert [(a["request_id"], a["status"], a["route"]) for a in access] == [
        ("boom-1", 500, "/v1/test-only/boom")
    ]


# -- probes ------------------------------------------------------------------------------------------------
def test_ready_loads_each_serving_version_once(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client, admin = app.test_client(), make_key(app, "admin")
    before = scrape(client, admin)
    assert client.get("/v1/ready").get_json() == {"status": "ready", "database": "ok"}
    middle = scrape(client, admin)
    for _ in range(3):
        assert client.get("/v1/ready").status_code == 200
    after = scrape(client, admin)
    assert delta(before, middle, "candor_model_load_seconds_count", flavour="tabular") == 2  # loan, clinical
    assert delta(middle, after, "candor_model_load_seconds_count", flavour="tabular") == 0
    lookups = sum(delta(middle, after, "candor_model_cache_total", result=r) for r in ("hit", "miss"))
    assert lookups == 0


def test_ready_fails_when_a_model_cannot_be_loaded_and_health_still_answers(
    make_app: Callable[..., Flask], capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()
    registry = app.extensions["candor"].store.registry
    info = registry.resolve("loan", "production")
    stored_files(app.extensions["candor"].store, info)[ARTIFACT_FILE].unlink()
    client = app.test_client()
    capsys.readouterr()
    for _ in range(2):
        response = client.get("/v1/ready", headers={"X-Request-ID": "ready-1"})
        assert response.status_code == 503 and response.mimetype == PROBLEM
        body = response.get_json()
        assert body["request_id"] == "ready-1" and "1 registered model" in body["detail"]
        assert "loan" not in json.dumps(body)  # the public probe names no model
    warnings = [line for line in json_lines(capsys.readouterr().err) if line["logger"] == "candor.ready"]
    assert len(warnings) == 1  # the second probe did not try the broken version again
    assert "loan version 1" in warnings[0]["message"] and warnings[0]["request_id"] == "ready-1"
    assert client.get("/v1/health").get_json() == {"status": "ok"}


def test_ready_fails_when_the_database_is_unreachable_and_health_still_answers(
    tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    app = make_app()
    store = app.extensions["candor"].store
    client = app.test_client()
    assert client.get("/v1/ready").status_code == 200
    url = store.engine.url
    store.engine.dispose()  # close pooled connections: the next query connects again
    if url.get_backend_name() == "sqlite":
        data_dir = app.extensions["candor"].settings.data_dir
        assert Path(str(url.database)).parent == data_dir.resolve() != Path.cwd()
        shutil.move(data_dir, tmp_path / "moved-away")
    else:
        _admin_execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')
    response = client.get("/v1/ready")
    assert response.status_code == 503 and response.mimetype == PROBLEM
    assert response.get_json()["detail"] == "The database is unreachable."
    assert GENERATED_ID.fullmatch(response.get_json()["request_id"])
    assert client.get("/v1/health").get_json() == {"status": "ok"}

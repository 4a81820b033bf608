"""Every server-side cap refuses an over-cap request with a 413 or a 422 naming the field before any model
work: the oracle is a data dir whose model artifacts were deleted, so any attempt to load a model would fail
with a 500 instead of the expected refusal."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from conftest import DATA, bearer
from flask import Flask
from test_api_auth import assert_problem

LOAN_ROW = json.loads((DATA / "loan_shap_request.json").read_text())["instances"][0]
LOAN = "/v1/models/loan/versions/1"
CAPS = {
    "max_instances": 3,
    "max_shap_evals": 100,
    "max_background_rows": 10,
    "max_cf_instances": 2,
    "max_cf_budget_ms": 1000,
    "max_text_instances": 2,
    "max_text_chars": 50,
    "max_body_bytes": 64 * 1024,
}


@pytest.fixture
def capped(make_app: Any) -> Flask:
    """An app with small caps whose model artifacts are gone (loading any model would be a 500)."""
    app = make_app(**CAPS)
    shutil.rmtree(app.extensions["candor"].settings.data_dir / "artifacts")
    return app


@pytest.fixture
def token(capped: Flask) -> str:
    return capped.extensions["candor"].store.keys.create("caps", ["explain"])[0]


def text(chars: int = 10) -> dict[str, str]:
    return {"text": "x" * chars}


@pytest.mark.parametrize(
    "route,body,field",
    [
        ("explain/shap", {"instances": [LOAN_ROW] * 4}, "instances"),
        ("predict", {"instances": [LOAN_ROW] * 4}, "instances"),
        (
            "explain/shap",
            {"instances": [LOAN_ROW], "algorithm": "permutation", "max_evals": 101},
            "max_evals",
        ),
        (
            "explain/shap",
            {"instances": [LOAN_ROW], "algorithm": "kernel", "background_rows": 11},
            "background_rows",
        ),
        ("explain/counterfactuals", {"instances": [LOAN_ROW] * 3}, "instances"),
        ("explain/counterfactuals", {"instances": [LOAN_ROW], "budget_ms": 1001}, "budget_ms"),
        ("explain/counterfactuals", {"instances": [LOAN_ROW], "total_cfs": 21}, "total_cfs"),
        ("explain/reasons", {"instances": [LOAN_ROW] * 3}, "instances"),
        ("explain/attention", {"instances": [text()] * 3}, "instances"),
        ("explain/attributions", {"instances": [text()] * 3}, "instances"),
        ("explain/attributions", {"instances": [text()], "budget_ms": 1001}, "budget_ms"),
        ("explain/attributions", {"instances": [text()], "n_steps": 1025}, "n_steps"),
        ("explain/attention", {"instances": [text(), text(51)]}, "instances.1.text"),
        ("explain/attributions", {"instances": [text(51)]}, "instances.0.text"),
    ],
)
def test_over_cap_requests_are_refused_before_any_model_work(
    capped: Flask, token: str, route: str, body: dict[str, Any], field: str
) -> None:
    response = capped.test_client().post(f"{LOAN}/{route}", json=body, headers=bearer(token))
    problem = assert_problem(response, 422)
    assert field in problem["errors"], problem


def test_an_oversized_body_is_413_before_parsing(capped: Flask, token: str) -> None:
    body = json.dumps({"instances": [LOAN_ROW] * 200}).encode()
    assert len(body) > CAPS["max_body_bytes"]
    response = capped.test_client().post(
        f"{LOAN}/explain/shap", data=body, content_type="application/json", headers=bearer(token)
    )
    assert_problem(response, 413)


def test_the_oracle_can_fail(capped: Flask, token: str) -> None:
    """A request within every cap does reach the (deleted) model: a 500, so the refusals above are real."""
    response = capped.test_client().post(
        f"{LOAN}/explain/shap", json={"instances": [LOAN_ROW]}, headers=bearer(token)
    )
    assert response.status_code == 500


def test_budgets_stay_below_the_worker_timeout(make_app: Any) -> None:
    settings = make_app(timeout=10, max_cf_budget_ms=60_000).extensions["candor"].settings
    assert settings.cf_budget_cap_ms == 5_000


def test_model_agnostic_shap_work_is_capped_before_computing(make_app: Any) -> None:
    app = make_app(max_shap_work=10_000)
    token = app.extensions["candor"].store.keys.create("work", ["explain"])[0]
    client = app.test_client()
    body = {"instances": [LOAN_ROW] * 2, "algorithm": "permutation", "max_evals": 100, "background_rows": 60}
    response = client.post(f"{LOAN}/explain/shap", json=body, headers=bearer(token))
    problem = assert_problem(response, 422)
    assert "12,000 model evaluations" in problem["errors"]["instances"][0]
    within = client.post(f"{LOAN}/explain/shap", json={**body, "background_rows": 50}, headers=bearer(token))
    assert within.status_code == 200, within.get_json()
    tree = client.post(f"{LOAN}/explain/shap", json={"instances": [LOAN_ROW] * 200}, headers=bearer(token))
    assert tree.status_code == 200, "TreeSHAP is not model-agnostic work"

"""The counterfactuals endpoint: the envelope, no-recourse answers inside the budget, already-desired rows,
determinism under a seed, contradictory requests (422 naming the field, nothing stored changes), auth, and
both database backends. Every counterfactual returned is checked by the oracle in ``cf_oracles``."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cf_oracles import (
    NO_CF_REASONS,
    Served,
    Subject,
    assert_problem,
    bearer,
    cf_url,
    check_envelope,
    ok_json,
    post,
    register_over_http,
    serve,
    served_copy,
    subject_for,
    without_volatile,
)
from flask import Flask

MARGIN_S = 1.5
LOAN = cf_url("loan")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Served]:
    with served_copy(tmp_path_factory.mktemp("cf-api"), demo_dir) as s:
        for task in ("binary", "multiclass", "regression"):
            register_over_http(s, task)
        yield s


@pytest.fixture(scope="module")
def loan(served: Served) -> Subject:
    return subject_for("loan", served.app)


@pytest.fixture(scope="module")
def declined(loan: Subject) -> list[dict[str, Any]]:
    return loan.label_rows("good", predicted=False, limit=231)


def timed_post(served: Served, url: str, body: dict[str, Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    response = post(served, url, body)
    return response, time.perf_counter() - started


def warm(served: Served, name: str, row: dict[str, Any]) -> None:
    """Load the model into the worker's cache first, so a timed call measures the request itself."""
    ok_json(post(served, f"/v1/models/{name}/versions/1/predict", {"instances": [row]}))


# -- the envelope --------------------------------------------------------------------------------------
def test_default_request_on_declined_loan_rows(served: Served, loan: Subject, declined: list) -> None:
    body = {"instances": declined[:10]}
    envelope = ok_json(post(served, LOAN, body))
    found = check_envelope(loan, envelope, body)

    version = ok_json(served.client.get("/v1/models/loan/versions/1", headers=served.auth))
    assert envelope["model"] == {"name": "loan", "version": 1, "sha256": version["artifact_sha256"]}
    assert envelope["schema_version"] and envelope["id"] and envelope["created_at"]
    method = envelope["method"]
    assert method["algorithm"] == "random"
    assert method["params"]["budget_ms"] == 3000
    assert method["params"]["total_cfs"] == 4
    assert method["params"]["engine"] in ("candor", "dice-ml")
    assert isinstance(method["library_versions"], dict)
    assert envelope["output"] == {"desired": {"class": "good"}}
    assert sorted(method["params"]["features_to_vary"]) == sorted(loan.default_vary)
    assert set(envelope["quality"]["dropped"]) == {"invalid", "constraint_violations"}
    assert isinstance(envelope["timing_ms"]["total"], int | float)
    # Not a stated guarantee, but the point of the endpoint: nine mutable features give recourse.
    assert sum(1 for f in found if f) >= 8, [r["status"] for r in envelope["results"]]


def test_searched_results_state_their_constraints(served: Served, loan: Subject, declined: list) -> None:
    """The contract's result shape carries ``constraints`` (features_to_vary and bounds) on every searched
    result, not only on no_counterfactual ones."""
    body = {"instances": declined[:3], "permitted_range": {"credit_amount": [500, 6000]}}
    envelope = ok_json(post(served, LOAN, body))
    check_envelope(loan, envelope, body)
    for result in envelope["results"]:
        assert "constraints" in result, (result["status"], sorted(result))


# -- no recourse ---------------------------------------------------------------------------------------
def test_clinical_has_no_recourse_within_budget(served: Served) -> None:
    """Every clinical feature is immutable: nothing can vary, so malignant rows have no counterfactual."""
    clinical = subject_for("clinical", served.app)
    assert clinical.default_vary == []
    malignant = clinical.label_rows("benign", predicted=False, limit=5)
    benign = clinical.label_rows("benign", predicted=True, limit=2)
    body = {"instances": malignant + benign, "budget_ms": 1000, "seed": 0}
    warm(served, "clinical", malignant[0])
    response, elapsed = timed_post(served, cf_url("clinical"), body)
    envelope = ok_json(response)
    check_envelope(clinical, envelope, body)
    statuses = [r["status"] for r in envelope["results"]]
    assert statuses == ["no_counterfactual"] * 5 + ["already_desired"] * 2
    for result in envelope["results"][:5]:
        assert result["counterfactuals"] == []
        assert result["reason"] == "unreachable within the constraints"
        assert result["constraints"]["features_to_vary"] == []
    assert elapsed <= 1.0 + MARGIN_S, elapsed


@pytest.fixture(scope="module")
def telephone_reachable(loan: Subject, declined: list) -> list[bool]:
    """Brute force, per declined row: does any telephone value make it "good"?"""
    values = loan.rules["telephone"].categories
    options = [{**row, "telephone": value} for row in declined for value in values]
    return loan.reaches(options, "good").reshape(len(declined), len(values)).any(axis=1).tolist()


def test_telephone_alone_cannot_reach_good(
    served: Served, loan: Subject, declined: list, telephone_reachable: list[bool]
) -> None:
    unreachable = [r for r, ok in zip(declined, telephone_reachable, strict=True) if not ok][:8]
    assert len(unreachable) == 8
    body = {"instances": unreachable, "features_to_vary": ["telephone"], "budget_ms": 1500, "seed": 3}
    warm(served, "loan", unreachable[0])
    response, elapsed = timed_post(served, LOAN, body)
    envelope = ok_json(response)
    check_envelope(loan, envelope, body)
    for result in envelope["results"]:
        assert result["status"] == "no_counterfactual", result
        assert result["counterfactuals"] == []
        assert result["reason"] in NO_CF_REASONS
        assert result["constraints"]["features_to_vary"] == ["telephone"]
        assert "telephone" in result["constraints"]["bounds"]
        assert "Kindly check" not in str(result), "dice-ml's exception text never reaches the client"
    assert elapsed <= 1.5 + MARGIN_S, elapsed


def test_telephone_pinned_by_permitted_range_has_no_recourse(served: Served, loan: Subject, declined: list):
    """features_to_vary=[telephone], permitted_range allowing only each row's own value: nothing can move."""
    rows = [r for r in declined if r["telephone"] == "none"][:5]
    body = {
        "instances": rows,
        "features_to_vary": ["telephone"],
        "permitted_range": {"telephone": ["none"]},
        "budget_ms": 1000,
    }
    response, elapsed = timed_post(served, LOAN, body)
    envelope = ok_json(response)
    check_envelope(loan, envelope, body)
    assert [r["status"] for r in envelope["results"]] == ["no_counterfactual"] * 5
    assert elapsed <= 1.0 + MARGIN_S, elapsed


def test_single_binary_feature_recourse_is_found(
    served: Served, loan: Subject, declined: list, telephone_reachable: list[bool]
) -> None:
    """Where toggling telephone alone does reach "good" (brute force says so), the search finds it.

    Not a stated guarantee; a two-value search space that the search misses would be a quality bug."""
    reachable = [r for r, ok in zip(declined, telephone_reachable, strict=True) if ok][:3]
    assert reachable, "the loan data has rows where telephone alone flips the decision"
    body = {"instances": reachable, "features_to_vary": ["telephone"], "seed": 0}
    envelope = ok_json(post(served, LOAN, body))
    found = check_envelope(loan, envelope, body)
    assert [r["status"] for r in envelope["results"]] == ["ok"] * len(reachable)
    for cfs, row in zip(found, reachable, strict=True):
        assert len(cfs) == 1, "one other telephone value: one distinct counterfactual"
        assert cfs[0]["changes"] == [
            {"feature": "telephone", "from": row["telephone"], "to": cfs[0]["instance"]["telephone"]}
        ]


def test_tiny_budget_is_never_a_500_and_stays_in_bounds(served: Served, loan: Subject, declined: list):
    body = {"instances": declined[:50], "budget_ms": 50, "seed": 0, "total_cfs": 4}
    warm(served, "loan", declined[0])
    response, elapsed = timed_post(served, LOAN, body)
    envelope = ok_json(response)
    check_envelope(loan, envelope, body)
    assert elapsed <= 0.05 + MARGIN_S, elapsed
    for result in envelope["results"]:
        assert result["status"] in ("ok", "no_counterfactual")
        if result["status"] == "no_counterfactual":
            assert result["reason"] in NO_CF_REASONS


@pytest.mark.parametrize("method", ["genetic", "kdtree"])
def test_other_methods_stay_within_budget(served: Served, loan: Subject, declined: list, method: str):
    body = {"instances": declined[:5], "budget_ms": 800, "seed": 0, "method": method}
    warm(served, "loan", declined[0])
    response, elapsed = timed_post(served, LOAN, body)
    check_envelope(loan, ok_json(response), body)
    assert elapsed <= 0.8 + MARGIN_S, elapsed


@pytest.mark.parametrize("method", ["genetic", "kdtree"])
def test_unreachable_is_claimed_only_when_nothing_exists(
    served: Served, loan: Subject, declined: list, method: str
) -> None:
    """ "unreachable within the constraints" states that no counterfactual exists. Where the random method
    returns some under the same constraints (each verified by the oracle), another method may come back
    empty-handed, but the reason it gives must not claim impossibility."""
    base = {"instances": declined[:2], "seed": 0, "budget_ms": 5000}
    found = check_envelope(loan, ok_json(post(served, LOAN, base)), base)
    assert all(found), "recourse exists for these rows"
    body = {**base, "method": method}
    envelope = ok_json(post(served, LOAN, body))
    check_envelope(loan, envelope, body)
    claims = [r.get("reason") for r in envelope["results"]]
    assert "unreachable within the constraints" not in claims, claims


# -- already desired -----------------------------------------------------------------------------------
def test_rows_already_desired(served: Served, loan: Subject, declined: list) -> None:
    approved = loan.label_rows("good", predicted=True, limit=4)
    body = {"instances": approved}
    envelope = ok_json(post(served, LOAN, body))
    check_envelope(loan, envelope, body)
    assert [r["status"] for r in envelope["results"]] == ["already_desired"] * 4
    assert all(r["counterfactuals"] == [] for r in envelope["results"])

    body = {"instances": declined[:3] + approved[:1], "desired_class": "bad"}
    envelope = ok_json(post(served, LOAN, body))
    check_envelope(loan, envelope, body)
    assert [r["status"] for r in envelope["results"]][:3] == ["already_desired"] * 3
    assert envelope["results"][3]["status"] in ("ok", "no_counterfactual")


# -- determinism ---------------------------------------------------------------------------------------
def _scramble_global_rngs() -> None:
    """dice-ml seeds and draws from the process-wide RNGs; a correct service is immune to their state."""
    np.random.seed(int(time.time_ns() % 2**31))
    random.seed(time.time_ns())
    np.random.rand(17)


DETERMINISM_BODIES = {
    "default": {"seed": 7},
    "categorical-only": {
        "seed": 11,
        "features_to_vary": ["status_of_existing_checking_account", "savings_account_and_bonds", "purpose"],
    },
    "ranges": {
        "seed": 5,
        "total_cfs": 3,
        "permitted_range": {"credit_amount": [500, 4000], "duration_in_month": [6, 24]},
    },
}


@pytest.mark.parametrize("case", list(DETERMINISM_BODIES))
def test_same_request_same_answer(
    served: Served, loan: Subject, declined: list, make_app: Callable[..., Flask], case: str
) -> None:
    body = {"instances": declined[10:14], **DETERMINISM_BODIES[case]}
    first = ok_json(post(served, LOAN, body))
    check_envelope(loan, first, body)
    _scramble_global_rngs()
    # Another request in between (other model, other seed) must not change the next answer.
    ok_json(post(served, cf_url("credit-binary"), {"instances": [declined_credit(served)], "seed": 99}))
    _scramble_global_rngs()
    again = ok_json(post(served, LOAN, body))
    assert without_volatile(again) == without_volatile(first)
    assert again["id"] != first["id"]

    fresh = serve(make_app())  # on PostgreSQL a separate demo install: same model, its own skops bytes
    _scramble_global_rngs()
    elsewhere = ok_json(post(fresh, LOAN, body))
    for envelope in (elsewhere, first):
        envelope["model"].pop("sha256")
    assert without_volatile(elsewhere) == without_volatile(first)


def declined_credit(served: Served) -> dict[str, Any]:
    return subject_for("credit-binary", served.app).label_rows("approve", predicted=False, limit=1)[0]


def test_other_seeds_are_still_valid(served: Served, loan: Subject, declined: list) -> None:
    for seed in (1, 2, 3):
        body = {"instances": declined[20:23], "seed": seed}
        envelope = ok_json(post(served, LOAN, body))
        check_envelope(loan, envelope, body)
        assert envelope["method"]["params"]["seed"] == seed


# -- contradictions: 422 naming the field, nothing stored changes ----------------------------------------
CASES = [
    # (model, body without instances, field)
    ("loan", {"features_to_vary": ["present_residence_since"]}, "features_to_vary"),
    ("loan", {"features_to_vary": ["credit_amount", "job"]}, "features_to_vary"),
    ("loan", {"features_to_vary": ["age_in_years"]}, "features_to_vary"),
    ("loan", {"features_to_vary": ["foreign_worker", "purpose"]}, "features_to_vary"),
    ("loan", {"features_to_vary": ["personal_status_and_sex"]}, "features_to_vary"),
    ("loan", {"features_to_vary": ["colour"]}, "features_to_vary"),
    ("loan", {"features_to_vary": []}, "features_to_vary"),
    ("loan", {"permitted_range": {"colour": ["red"]}}, "permitted_range"),
    ("loan", {"permitted_range": {"present_residence_since": [1, 2]}}, "permitted_range"),
    ("loan", {"permitted_range": {"age_in_years": [30, 40]}}, "permitted_range"),
    ("loan", {"permitted_range": {"credit_amount": [5000, 100]}}, "permitted_range.credit_amount"),
    ("loan", {"permitted_range": {"credit_amount": [50_000, 60_000]}}, "permitted_range.credit_amount"),
    ("loan", {"permitted_range": {"duration_in_month": [-10, 0]}}, "permitted_range.duration_in_month"),
    ("loan", {"permitted_range": {"purpose": ["spaceship"]}}, "permitted_range.purpose"),
    ("loan", {"permitted_range": {"purpose": ["business", "yacht"]}}, "permitted_range.purpose"),
    ("loan", {"desired_class": "excellent"}, "desired_class"),
    ("loan", {"desired_class": "Good"}, "desired_class"),
    ("loan", {"desired_range": [0.0, 1.0]}, "desired_range"),
    ("loan", {"budget_ms": 20_001}, "budget_ms"),
    ("loan", {"budget_ms": 10_000_000}, "budget_ms"),
    ("loan", {"colour": "red"}, "colour"),
    ("loan", {"total_cfs": 0}, "total_cfs"),
    ("loan", {"total_cfs": 21}, "total_cfs"),
    ("loan", {"method": "magic"}, "method"),
    ("clinical", {"features_to_vary": ["mean radius"]}, "features_to_vary"),
    ("credit-binary", {"features_to_vary": ["gender"]}, "features_to_vary"),
    ("credit-binary", {"features_to_vary": ["region", "plan"]}, "features_to_vary"),
    ("credit-binary", {"permitted_range": {"gender": ["f"]}}, "permitted_range"),
    ("credit-binary", {"permitted_range": {"rate": [20.0, 30.0]}}, "permitted_range.rate"),
    ("credit-regression", {"desired_class": "approve", "desired_range": [0, 1]}, "desired_class"),
    ("credit-regression", {}, "desired_range"),
    ("credit-regression", {"desired_range": [3.0, 1.0]}, "desired_range"),
    ("credit-multiclass", {}, "desired_class"),
    ("credit-multiclass", {"desired_class": "approve"}, "desired_class"),
]


def _case_id(case: tuple[str, dict[str, Any], str]) -> str:
    model, body, field = case
    return f"{model}-{field}-{'-'.join(map(str, body.values()))[:40]}"


def row_for(served: Served, model: str) -> dict[str, Any]:
    subject = subject_for(model, served.app)
    if model in ("credit-regression", "credit-multiclass"):
        return {k: v.item() if hasattr(v, "item") else v for k, v in subject.reference.iloc[0].items()}
    favourable = subject.manifest["favourable_class"]
    return subject.label_rows(favourable, predicted=False, limit=1)[0]


def assert_models_intact(served: Served, loan: Subject, row: dict[str, Any]) -> None:
    models = ok_json(served.client.get("/v1/models", headers=served.auth))
    names = {m["name"] for m in models["models"]}
    assert {"loan", "clinical", "credit-binary", "credit-multiclass", "credit-regression"} <= names
    detail = ok_json(served.client.get("/v1/models/loan", headers=served.auth))
    assert [v["version"] for v in detail["versions"]] == [1]
    assert detail["production_version"] == 1
    predicted = ok_json(post(served, "/v1/models/loan/versions/1/predict", {"instances": [row]}))
    got = predicted["predictions"][0]["probabilities"]
    np.testing.assert_allclose([got["bad"], got["good"]], loan.proba([row])[0], rtol=0, atol=1e-9)


@pytest.mark.parametrize(("model", "options", "field"), CASES, ids=[_case_id(c) for c in CASES])
def test_contradictions_are_422_naming_the_field(
    served: Served, loan: Subject, declined: list, model: str, options: dict[str, Any], field: str
) -> None:
    body = {"instances": [row_for(served, model)], **options}
    assert_problem(post(served, cf_url(model), body), 422, field)
    assert_models_intact(served, loan, declined[0])


def test_too_many_instances_and_bad_rows_are_422(served: Served, loan: Subject, declined: list) -> None:
    assert_problem(post(served, LOAN, {"instances": declined[:51]}), 422, "instances")
    assert_problem(post(served, LOAN, {"instances": []}), 422, "instances")
    bad = {**declined[0], "purpose": "spaceship"}
    assert_problem(post(served, LOAN, {"instances": [declined[1], bad]}), 422, "instances.1.purpose")
    missing = {k: v for k, v in declined[0].items() if k != "credit_amount"}
    assert_problem(post(served, LOAN, {"instances": [missing]}), 422, "instances.0.credit_amount")
    assert_models_intact(served, loan, declined[0])


@pytest.mark.parametrize(
    "options",
    [
        {"permitted_range": {"purpose": []}},
        {"permitted_range": {"credit_amount": ["a", "b"]}},
        {"permitted_range": {"credit_amount": [1000]}},
        {"permitted_range": {"credit_amount": [1000, 2000, 3000]}},
        {"permitted_range": {"purpose": [3, 4]}},
        {"permitted_range": {"credit_amount": [1000, 1000]}},
        {"permitted_range": {"credit_amount": [1000.25, 1000.75]}},
        {"permitted_range": ["credit_amount"]},
        {"features_to_vary": "credit_amount"},
        {"features_to_vary": ["credit_amount", "credit_amount"]},
        {"seed": -1},
        {"budget_ms": 0},
        {"budget_ms": -5},
        {"proximity_weight": -1},
        {"total_cfs": "four"},
    ],
    ids=lambda o: str(o)[:50],
)
def test_odd_options_are_never_a_500(served: Served, loan: Subject, declined: list, options: dict) -> None:
    """Not each listed in the contract: whatever the answer, it is a 200 that keeps every promise or a 4xx
    problem, never a 500 or dice-ml's own error text."""
    body = {"instances": declined[:2], "budget_ms": 1000, **options}
    response = post(served, LOAN, body)
    assert response.status_code in (200, 422), response.get_data(as_text=True)[:2000]
    if response.status_code == 200:
        check_envelope(loan, response.get_json(), body)
    else:
        assert_problem(response, 422)
    assert_models_intact(served, loan, declined[0])


# -- auth ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [LOAN, "/v1/models/loan/versions/1/explain/reasons"])
def test_new_routes_need_an_explain_key(served: Served, declined: list, path: str) -> None:
    body = {"instances": declined[:1]}
    for headers in ({}, bearer("garbage"), {"Authorization": "Basic abc"}):
        response = served.client.post(path, json=body, headers=headers)
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(served.client.post(path, json=body, headers=served.writer), 403)
    assert post(served, path, body).status_code == 200


# -- both backends -------------------------------------------------------------------------------------
def test_fixture_model_on_each_backend(make_app: Callable[..., Flask], database_url: str) -> None:
    """The fixture model registered over HTTP on SQLite and PostgreSQL: counterfactuals keep every promise,
    are reproducible, and a 422 leaves the registry as it was."""
    served = serve(make_app(database_url=database_url))
    name = register_over_http(served, "binary")
    subject = subject_for(name, served.app)
    rows = subject.label_rows("approve", predicted=False, limit=4)
    body = {"instances": rows, "seed": 2, "total_cfs": 3, "permitted_range": {"debt": [0, 3000]}}
    first = ok_json(post(served, cf_url(name), body))
    found = check_envelope(subject, first, body)
    assert any(found)
    assert without_volatile(ok_json(post(served, cf_url(name), body))) == without_volatile(first)
    assert_problem(post(served, cf_url(name), {**body, "features_to_vary": ["age"]}), 422, "features_to_vary")
    detail = ok_json(served.client.get(f"/v1/models/{name}", headers=served.auth))
    assert [v["version"] for v in detail["versions"]] == [1]

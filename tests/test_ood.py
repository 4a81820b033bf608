"""Out-of-distribution flags on every explained tabular instance: reference rows are (almost all) in
distribution, absurd rows are flagged with the features named, the scores are scikit-learn's
IsolationForest.score_samples fitted with the same seed on the same encoded rows, and two apps agree."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from conftest import DATA, bearer
from sklearn.ensemble import IsolationForest

from api.demo import LOAN_TARGET, german_credit
from explainers import ood

SHAP = "/v1/models/loan/versions/1/explain/shap"


def reference_rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    frame = german_credit().drop(columns=[LOAN_TARGET]).iloc[start : start + n]
    return json.loads(frame.to_json(orient="records"))


def absurd(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "credit_amount": 10_000_000, "age_in_years": 150}


def oracle_forest(app) -> IsolationForest:  # type: ignore[no-untyped-def]
    """The forest fitted directly: the pipeline's own preprocessing of the reference data, same seed."""
    store = app.extensions["candor"].store
    pipeline = store.registry.load(store.registry.resolve("loan", "1")).estimator
    encoded = pipeline[:-1].transform(german_credit().drop(columns=[LOAN_TARGET]))
    return IsolationForest(
        n_estimators=ood.N_ESTIMATORS, contamination=ood.CONTAMINATION, random_state=ood.RANDOM_STATE
    ).fit(encoded)


def encode(app, rows: list[dict[str, Any]]) -> np.ndarray:  # type: ignore[no-untyped-def]
    import pandas as pd

    store = app.extensions["candor"].store
    pipeline = store.registry.load(store.registry.resolve("loan", "1")).estimator
    return pipeline[:-1].transform(pd.DataFrame(rows))


def test_reference_rows_are_mostly_in_distribution(client, auth):
    body = client.post(SHAP, json={"instances": reference_rows(400), "layout": "columnar"}, headers=auth)
    assert body.status_code == 200, body.get_json()
    envelope = body.get_json()
    flags = [r["ood"] for r in envelope["results"]]
    assert len(flags) == 400
    assert all(f["features_outside_range"] == [] for f in flags)
    assert all(f["is_outlier"] == f["score_outlier"] for f in flags)
    # the threshold is the 1% quantile of the reference's scores: about 1% of its rows fall below it
    assert sum(f["is_outlier"] for f in flags) <= 2 * ood.CONTAMINATION * len(flags)
    described = envelope["quality"]["ood"]
    assert described["detector"] == "isolation_forest"
    assert "lower is more anomalous" in described["score"]
    assert described["params"]["random_state"] == ood.RANDOM_STATE
    assert described["params"]["fit_rows"] == 1000


@pytest.mark.parametrize("rows", [3, ood.WALK_ROWS + 44], ids=["numpy-walk", "tree-apply"])
def test_scores_equal_isolation_forest_fitted_directly(client, auth, app, rows):
    instances = reference_rows(rows, start=100)
    instances[0] = absurd(instances[0])
    response = client.post(SHAP, json={"instances": instances, "layout": "columnar"}, headers=auth)
    assert response.status_code == 200, response.get_json()
    envelope = response.get_json()
    forest = oracle_forest(app)
    expected = forest.score_samples(encode(app, instances))
    got = np.array([r["ood"]["score"] for r in envelope["results"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert envelope["quality"]["ood"]["threshold"] == pytest.approx(forest.offset_, abs=1e-12)
    score_outliers = [r["ood"]["score_outlier"] for r in envelope["results"]]
    assert score_outliers == (forest.predict(encode(app, instances)) == -1).tolist()


def test_absurd_rows_are_flagged_with_their_features(client, auth):
    rows = reference_rows(2)
    sent = [absurd(rows[0]), {**rows[1], "duration_in_month": -5}]
    response = client.post(SHAP, json={"instances": sent}, headers=auth)
    assert response.status_code == 200, response.get_json()
    flags = [r["ood"] for r in response.get_json()["results"]]
    assert flags[0]["is_outlier"] is True
    assert flags[0]["features_outside_range"] == ["credit_amount", "age_in_years"]
    assert flags[1]["is_outlier"] is True
    assert flags[1]["features_outside_range"] == ["duration_in_month"]


def test_recourse_queries_carry_the_flags(client, auth):
    declined = json.loads((DATA / "loan_declined.json").read_text())["instances"][0]
    sent = [declined, {**declined, "age_in_years": 150}]
    for method in ("reasons", "counterfactuals"):
        body = {"instances": sent, "budget_ms": 2000} if method == "counterfactuals" else {"instances": sent}
        response = client.post(f"/v1/models/loan/versions/1/explain/{method}", json=body, headers=auth)
        assert response.status_code == 200, (method, response.get_json())
        envelope = response.get_json()
        flags = [r["ood"] for r in envelope["results"]]
        assert flags[0]["features_outside_range"] == [], method
        assert flags[1]["features_outside_range"] == ["age_in_years"], method
        assert flags[1]["is_outlier"] is True, method
        assert envelope["quality"]["ood"]["detector"] == "isolation_forest"


def test_range_checks_compare_as_python_does(app, monkeypatch):
    """The column-at-a-time range check keeps the row-by-row rule: not a finite number within the reference's
    [min, max] is outside, whatever the value's type (bools are numbers; an int past 2**53 is compared
    exactly, not as the float it would round to)."""
    store = app.extensions["candor"].store
    model = store.registry.load(store.registry.resolve("loan", "1"))
    found = ood.detector(model)
    monkeypatch.setitem(found.bounds, "credit_amount", (0.0, float(2**53)))
    base = reference_rows(1)[0]
    values = [2**53, 2**53 + 1, float("nan"), float("inf"), True, None, "12", 5_000]
    rows = [{**base, "credit_amount": value} for value in values]
    outside = [("credit_amount" in names) for names in found.outside_range(rows)]
    assert outside == [False, True, True, True, False, True, True, False]
    assert outside[:4] == [("credit_amount" in n) for n in found.outside_range(rows[:4])]  # all-number path


def test_unknown_categories_count_as_outside_the_range(app):
    """Validation refuses categories outside the manifest; the detector still names one the reference
    data never holds (for callers that skip validation)."""
    store = app.extensions["candor"].store
    model = store.registry.load(store.registry.resolve("loan", "1"))
    row = {**reference_rows(1)[0], "purpose": "time machine"}
    assert ood.detector(model).outside_range([row]) == [["purpose"]]


def test_two_apps_flag_identically_and_a_replay_agrees(make_app):
    sent = [*reference_rows(5, start=500), absurd(reference_rows(1)[0])]
    envelopes = []
    for _ in range(2):
        application = make_app()
        token = application.extensions["candor"].store.keys.create("k", ["explain", "audit:read"])[0]
        client = application.test_client()
        response = client.post(SHAP, json={"instances": sent}, headers=bearer(token))
        assert response.status_code == 200, response.get_json()
        envelopes.append(response.get_json())
    assert [r["ood"] for r in envelopes[0]["results"]] == [r["ood"] for r in envelopes[1]["results"]]
    assert envelopes[0]["quality"]["ood"] == envelopes[1]["quality"]["ood"]
    replay = client.post(f"/v1/explanations/{envelopes[1]['id']}/replay", headers=bearer(token))
    assert replay.status_code == 200, replay.get_json()
    assert replay.get_json()["identical"] is True


def test_forest_scorer_reproduces_score_samples():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(600, 7))
    forest = IsolationForest(n_estimators=50, random_state=3).fit(train)
    queries = np.vstack([rng.normal(size=(200, 7)), rng.normal(scale=50, size=(20, 7))])
    scorer = ood.ForestScorer(forest)
    expected = forest.score_samples(queries)
    assert np.array_equal(scorer.walked(queries), expected)
    assert np.array_equal(scorer.applied(queries), expected)
    assert np.array_equal(scorer.score_samples(queries[:5]), expected[:5])

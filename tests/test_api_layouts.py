"""The two response layouts of SHAP explanations carry the same numbers."""

from __future__ import annotations

import json

import numpy as np

from api.demo import german_credit

PATH = "/v1/models/loan/versions/1/explain/shap"


def loan_rows(n: int) -> list[dict]:
    frame = german_credit().drop(columns=["creditability"]).head(n)
    return json.loads(frame.to_json(orient="records"))


def test_columnar_layout_equals_records_layout(client, auth):
    rows = loan_rows(25)
    records = client.post(PATH, json={"instances": rows}, headers=auth).get_json()
    columnar = client.post(PATH, json={"instances": rows, "layout": "columnar"}, headers=auth).get_json()
    order = columnar["output"]["feature_order"]
    assert sorted(order) == sorted(rows[0])
    assert columnar["method"]["params"]["layout"] == "columnar"
    for by_record, by_column in zip(records["results"], columnar["results"], strict=True):
        expected = {a["feature"]: a["attribution"] for a in by_record["attributions"]}
        assert dict(zip(order, by_column["attribution_values"], strict=True)) == expected
        for key in ("prediction", "target", "output_value", "base_value", "additivity_residual"):
            assert by_column[key] == by_record[key]
        assert "attributions" not in by_column


def test_columnar_layout_refuses_top_k(client, auth):
    response = client.post(
        PATH, json={"instances": loan_rows(1), "layout": "columnar", "top_k": 3}, headers=auth
    )
    assert response.status_code == 422
    assert "top_k" in response.get_json()["errors"]


def test_reported_probabilities_are_the_models_own(client, auth, app):
    """Candor derives probabilities from the margin when it verified they are its sigmoid; they must still
    equal predict_proba."""
    rows = loan_rows(200)
    body = client.post(PATH, json={"instances": rows}, headers=auth).get_json()
    store = app.extensions["candor"].store
    pipeline = store.registry.load(store.registry.resolve("loan", "1")).estimator
    expected = pipeline.predict_proba(german_credit().drop(columns=["creditability"]).head(200))
    got = np.array([[r["prediction"]["probabilities"][c] for c in ("bad", "good")] for r in body["results"]])
    assert np.abs(got - expected).max() < 1e-12
    labels = [r["prediction"]["label"] for r in body["results"]]
    assert labels == list(pipeline.predict(german_credit().drop(columns=["creditability"]).head(200)))

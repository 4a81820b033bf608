"""The dataset profile and the explanation segments of a version, against oracles computed directly on the
reference data: pandas and scipy for the profile, scikit-learn's KMeans and silhouette on the attribution
matrix that /explain/shap returns for the segments."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from scipy.stats import chi2_contingency
from sklearn.cluster import KMeans
from sklearn.ensemble import IsolationForest
from sklearn.metrics import silhouette_score
from text_oracles import bearer, tar_of_directory, text_app, tiny_bert_dir, tokens_for, upload
from threadpoolctl import threadpool_limits

from api.demo import LOAN_TARGET, german_credit
from explainers import ood, segments

LOAN = "/v1/models/loan/versions/1"


@pytest.fixture
def reference() -> pd.DataFrame:
    return german_credit().drop(columns=[LOAN_TARGET])


def corrected_cramers_v(a: pd.Series, b: pd.Series) -> float:
    """Bias-corrected Cramér's V (Bergsma 2013) straight from the contingency table."""
    table = pd.crosstab(a, b)
    chi2 = chi2_contingency(table, correction=False)[0]
    n = table.to_numpy().sum()
    r, k = table.shape
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_corr, k_corr = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    return math.sqrt(phi2 / min(k_corr - 1, r_corr - 1))


def test_profile_equals_pandas_and_scipy(client, auth, app, reference):
    response = client.get(f"{LOAN}/profile", headers=auth)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["cached"] is False
    assert body["rows"] == len(reference)
    features = {f["feature"]: f for f in body["features"]}
    assert list(features) == list(reference.columns)
    for name, column in reference.items():
        got = features[name]
        assert (got["count"], got["missing"]) == (column.notna().sum(), column.isna().sum())
        if got["type"] == "numeric":
            values = column.astype(float)
            for statistic in ("min", "max", "mean", "std"):
                assert got[statistic] == pytest.approx(getattr(values, statistic)(), abs=1e-9), name
            expected = values.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).tolist()
            assert list(got["quantiles"].values()) == pytest.approx(expected, abs=1e-9)
        else:
            counts = column.value_counts()
            assert got["distinct"] == len(counts)
            for item in got["top_categories"]:
                assert item["count"] == counts[item["value"]]
            assert got["top_categories"][0]["count"] == counts.max()

    correlations = body["correlations"]
    numeric = correlations["numeric_features"]
    assert numeric == [c for c in reference.columns if reference[c].dtype != object]
    for method in ("pearson", "spearman"):
        expected = reference[numeric].astype(float).corr(method=method).to_numpy()
        np.testing.assert_allclose(np.array(correlations[method], dtype=float), expected, atol=1e-12)
    categorical = correlations["categorical_features"]
    assert "bias-corrected" in correlations["cramers_v_method"]
    for i, a in enumerate(categorical):
        for j, b in enumerate(categorical):
            expected_v = corrected_cramers_v(reference[a], reference[b])
            assert correlations["cramers_v"][i][j] == pytest.approx(expected_v, abs=1e-12), (a, b)

    # anomalies: the isolation forest fitted directly on the pipeline's encoding of the reference rows
    store = app.extensions["candor"].store
    pipeline = store.registry.load(store.registry.resolve("loan", "1")).estimator
    encoded = pipeline[:-1].transform(reference)
    forest = IsolationForest(
        n_estimators=ood.N_ESTIMATORS, contamination=ood.CONTAMINATION, random_state=ood.RANDOM_STATE
    ).fit(encoded)
    scores = forest.score_samples(encoded)
    anomalies = body["anomalies"]
    assert anomalies["count"] == int((scores < forest.offset_).sum())
    top = [a["row"] for a in anomalies["top"]]
    assert top == np.argsort(scores, kind="stable")[: len(top)].tolist()
    assert [a["score"] for a in anomalies["top"]] == pytest.approx(scores[top].tolist(), abs=1e-12)
    assert anomalies["top"][0]["values"]["credit_amount"] == reference.iloc[top[0]]["credit_amount"]

    # the summary states the same numbers
    summary = body["summary"]
    assert f"{len(reference)} rows and {reference.shape[1]} features" in summary
    assert "No feature has missing values." in summary
    pearson = reference[numeric].astype(float).corr().to_numpy().copy()
    np.fill_diagonal(pearson, 0)
    i, j = np.unravel_index(np.abs(pearson).argmax(), pearson.shape)
    pair = sorted((i, j))
    assert f"between {numeric[pair[0]]} and {numeric[pair[1]]} (Pearson r = {pearson[i, j]:.2f})" in summary
    assert f"flags {anomalies['count']} of {len(reference)} rows" in summary
    assert f"the most anomalous is row {top[0]} (score {scores[top[0]]:.3f})" in summary

    again = client.get("/v1/models/loan/versions/latest/profile", headers=auth).get_json()
    assert again["cached"] is True
    assert {k: v for k, v in again.items() if k != "cached"} == {
        k: v for k, v in body.items() if k != "cached"
    }


def test_segments_equal_kmeans_on_the_shap_matrix(client, auth, app, reference):
    response = client.get(f"{LOAN}/segments?k_max=5", headers=auth)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["cached"] is False
    assert body["rows"] == len(reference)
    assert body["assignments"]["rows"] == list(range(len(reference)))

    # the attribution matrix /explain/shap returns for the same rows, with the version's defaults
    instances = reference.to_dict("records")
    shap = client.post(
        f"{LOAN}/explain/shap", json={"instances": instances, "layout": "columnar"}, headers=auth
    ).get_json()
    matrix = np.array([r["attribution_values"] for r in shap["results"]])
    assert body["attributions"]["output"]["space"] == shap["output"]["space"]
    with threadpool_limits(limits=1):
        fits = {
            k: KMeans(n_clusters=k, n_init=segments.N_INIT, random_state=segments.RANDOM_STATE).fit(matrix)
            for k in range(2, 6)
        }
        silhouettes = {k: silhouette_score(matrix, fits[k].labels_) for k in fits}
    assert [s["k"] for s in body["silhouette"]] == [2, 3, 4, 5]
    for item in body["silhouette"]:
        assert item["score"] == pytest.approx(silhouettes[item["k"]], abs=1e-12)
    chosen = max(silhouettes, key=lambda k: silhouettes[k])
    assert body["k"] == chosen
    labels = fits[chosen].labels_
    assert body["assignments"]["labels"] == labels.tolist()

    # sizes, dominant features and outcome rates computed directly
    store = app.extensions["candor"].store
    predicted = store.registry.load(store.registry.resolve("loan", "1")).estimator.predict(reference)
    assert sum(s["size"] for s in body["segments"]) == len(reference)
    assert body["outcome"] == {"statistic": "favourable_share", "class": "good"}
    for segment in body["segments"]:
        members = labels == segment["segment"]
        assert segment["size"] == members.sum()
        assert segment["share"] == pytest.approx(members.mean())
        assert segment["outcome_rate"] == pytest.approx((predicted[members] == "good").mean(), abs=1e-12)
        mean_abs = np.abs(matrix[members]).mean(axis=0)
        top = np.argsort(-mean_abs, kind="stable")[:3]
        order = shap["output"]["feature_order"]
        assert [d["feature"] for d in segment["dominant_features"]] == [order[j] for j in top]
        first = segment["dominant_features"][0]
        assert first["mean_attribution"] == pytest.approx(matrix[members, top[0]].mean(), abs=1e-12)
        assert f"{segment['size']} rows ({segment['share']:.1%})" in segment["description"]
        assert f"{segment['outcome_rate']:.1%} are predicted good" in segment["description"]

    again = client.get(f"{LOAN}/segments?k_max=5", headers=auth).get_json()
    assert again["cached"] is True
    assert again["segments"] == body["segments"]
    other = client.get(f"{LOAN}/segments?k_max=3", headers=auth).get_json()
    assert other["cached"] is False
    assert other["silhouette"] == body["silhouette"][:2]


def test_unknown_versions_and_bad_queries_are_problems(client, auth):
    for path in ("profile", "segments"):
        for url in (f"/v1/models/loan/versions/9/{path}", f"/v1/models/nope/versions/1/{path}"):
            response = client.get(url, headers=auth)
            assert response.status_code == 404, url
            assert response.mimetype == "application/problem+json"
    for value in ("1", "9", "abc", "2.5"):
        response = client.get(f"{LOAN}/segments?k_max={value}", headers=auth)
        assert response.status_code == 422, value
        assert response.mimetype == "application/problem+json"
        assert "k_max" in response.get_json()["errors"]


def test_text_models_do_not_apply(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    app: Flask = text_app(tmp_path / "data")
    try:
        tokens = tokens_for(app)
        response = upload(app, tokens["models:write"], tar_of_directory(tiny_bert_dir(tmp_path_factory)))
        assert response.status_code == 201, response.get_json()
        client = app.test_client()
        for path in ("profile", "segments"):
            answer = client.get(f"/v1/models/triage/versions/1/{path}", headers=bearer(tokens["explain"]))
            assert answer.status_code == 422, path
            assert answer.mimetype == "application/problem+json"
            assert "does not apply to text models" in answer.get_json()["errors"]["method"][0]
        attention = client.post(
            "/v1/models/triage/versions/1/explain/attention",
            json={"instances": [{"text": "Chest pain since this morning."}], "layers": [0]},
            headers=bearer(tokens["explain"]),
        )
        assert attention.status_code == 200, attention.get_json()
        envelope = attention.get_json()
        assert "ood" not in envelope["quality"]
        assert all("ood" not in result for result in envelope["results"])
    finally:
        app.extensions["candor"].store.close()

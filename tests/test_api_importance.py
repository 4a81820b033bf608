"""Global importance: mean |SHAP| over the reference data, computed once per version and cached."""

from __future__ import annotations

import numpy as np
import shap

from api.demo import german_credit


def test_importance_matches_shap_and_is_cached(client, auth, app):
    first = client.get("/v1/models/loan/versions/1/importance", headers=auth)
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert body["kind"] == "global_importance"
    assert body["cached"] is False
    assert body["output"]["space"] == "log_odds"
    assert body["method"]["algorithm"] == "tree"

    # Oracle: shap directly on the same pipeline and all 1,000 reference rows, regrouped by raw feature.
    store = app.extensions["candor"].store
    model = store.registry.load(store.registry.resolve("loan", "1"))
    pipeline = model.estimator
    data = german_credit().drop(columns=["creditability"])
    encoded = pipeline[:-1].transform(data)
    values = shap.TreeExplainer(pipeline[-1]).shap_values(encoded)
    ct = pipeline[0]
    expected = {}
    offset = 0
    for _name, transformer, columns in ct.transformers_:
        if transformer == "drop":
            continue
        if hasattr(transformer, "categories_"):
            for column, cats in zip(columns, transformer.categories_, strict=True):
                expected[column] = np.abs(values[:, offset : offset + len(cats)].sum(axis=1)).mean()
                offset += len(cats)
        else:
            for column in columns:
                expected[column] = np.abs(values[:, offset]).mean()
                offset += 1
    got = {f["feature"]: f["importance"] for f in body["features"]}
    assert got.keys() == expected.keys()
    for feature, value in expected.items():
        assert abs(got[feature] - value) < 1e-6, feature
    importances = [f["importance"] for f in body["features"]]
    assert importances == sorted(importances, reverse=True)

    second = client.get("/v1/models/loan/versions/latest/importance", headers=auth).get_json()
    assert second["cached"] is True
    assert second["features"] == body["features"]


def test_importance_needs_a_key_and_a_known_version(client, auth):
    assert client.get("/v1/models/loan/versions/1/importance").status_code == 401
    missing = client.get("/v1/models/loan/versions/9/importance", headers=auth)
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"

"""Exact TreeSHAP on XGBoost and LightGBM models over HTTP equals the libraries' own contributions
(``pred_contribs=True`` / ``pred_contrib=True``) summed per raw feature: standalone boosters with native
categorical splits and pipelines with one-hot columns; binary, multiclass and regression; rows with
missing values; additivity in the margin space that ``output.space`` names."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tree_models as tm
import xgboost
from scipy.special import expit, softmax

ROWS = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55]
TOLERANCE = 1e-5
"""The boosters compute in float32; the API sums the same float32 contributions in float64."""
SPACES = {"binary": "log_odds", "multiclass": "raw", "regression": "raw"}


def implementation(library: str, task: str, build: str) -> str:
    """The tabulated TreeSHAP where it reproduces the booster (numeric splits, missing values included);
    the booster's own contributions for native categorical splits and LightGBM's per-class trees."""
    if build == "pipeline" and (library, task) != ("lightgbm", "multiclass"):
        return "path_table"
    return "xgboost pred_contribs" if library == "xgboost" else "lightgbm pred_contrib"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(
    client: Any, keys: dict[str, str], spec: dict[str, Any], artifact: bytes, data: pd.DataFrame
) -> None:
    response = client.post(
        f"/v1/models/{spec['name']}/versions",
        headers=bearer(keys["models:write"]),
        content_type="multipart/form-data",
        data=tm.form(spec, artifact, data, "model"),
    )
    assert response.status_code == 201, response.get_json()


def request_rows(data: pd.DataFrame) -> list[dict[str, Any]]:
    """The chosen rows as JSON instances: a missing size is sent as null."""
    rows = data.iloc[ROWS][tm.FEATURES].to_dict("records")
    for row in rows:
        row["size"] = None if math.isnan(row["size"]) else row["size"]
    assert any(row["size"] is None for row in rows) and any(row["size"] is not None for row in rows)
    return rows


def oracle(library: str, build: str, fitted: Any, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(contributions per raw feature (rows, outputs, 3), bias (rows, outputs)) from the library itself."""
    if build == "standalone":
        matrix = tm.codes(rows)
        if library == "xgboost":
            raw = fitted.predict(tm.xgboost_matrix(fitted, matrix), pred_contribs=True)
        else:
            raw = fitted.predict(matrix, pred_contrib=True)
        per_feature = _outputs(raw, 3)
    else:
        encoded = fitted[:-1].transform(rows[tm.FEATURES])
        estimator = fitted[-1]
        if library == "xgboost":
            raw = estimator.get_booster().predict(xgboost.DMatrix(encoded), pred_contribs=True)
        else:
            raw = estimator.booster_.predict(encoded, pred_contrib=True)
        encoded_contribs = _outputs(raw, encoded.shape[1])  # colour one-hot (4), size, weight, bias
        per_feature = np.stack(
            [
                encoded_contribs[:, :, 4],
                encoded_contribs[:, :, 0:4].sum(axis=2),
                encoded_contribs[:, :, 5],
                encoded_contribs[:, :, 6],
            ],
            axis=2,
        )
    return per_feature[:, :, :3], per_feature[:, :, 3]


def _outputs(raw: np.ndarray, n_features: int) -> np.ndarray:
    raw = np.asarray(raw, dtype=float)
    if raw.ndim == 3:
        return raw
    return raw.reshape(len(raw), -1, n_features + 1)


def margin_of(values: np.ndarray, bias: np.ndarray, k: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The oracle's attributions and base for class ``k`` (a binary booster has one output: class 1)."""
    if n_classes == 2:
        sign = 1.0 if k == 1 else -1.0
        return sign * values[:, 0, :], sign * bias[:, 0]
    return values[:, k, :], bias[:, k]


@pytest.mark.parametrize("build", ["standalone", "pipeline"])
@pytest.mark.parametrize("task", tm.TASKS)
@pytest.mark.parametrize("library", tm.LIBRARIES)
def test_tree_shap_equals_library_contributions(client, keys, library, task, build):
    spec, artifact, data, fitted = getattr(tm, build)(library, task)
    register(client, keys, spec, artifact, data)
    rows = request_rows(data)
    values, bias = oracle(library, build, fitted, data.iloc[ROWS])
    url = f"/v1/models/{spec['name']}/versions/1/explain/shap"
    classes = spec.get("classes") or [None]
    for k, label in enumerate(classes):
        body: dict[str, Any] = {"instances": rows, "layout": "columnar"}
        if label is not None:
            body["target"] = label
        response = client.post(url, headers=bearer(keys["explain"]), json=body)
        assert response.status_code == 200, response.get_json()
        envelope = response.get_json()
        assert envelope["method"]["algorithm"] == "tree"
        assert envelope["method"]["params"]["implementation"] == implementation(library, task, build)
        assert envelope["output"]["space"] == SPACES[task]
        assert envelope["output"]["feature_order"] == tm.FEATURES
        assert envelope["quality"]["additivity_ok"] is True
        expected, base = margin_of(values, bias, k, len(classes))
        got = np.array([r["attribution_values"] for r in envelope["results"]])
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(
            [r["base_value"] for r in envelope["results"]], base, rtol=0, atol=TOLERANCE
        )
        outputs = np.array([r["output_value"] for r in envelope["results"]])
        np.testing.assert_allclose(outputs, got.sum(axis=1) + base, rtol=0, atol=TOLERANCE)
        check_predictions(envelope, task, classes, values, bias)


def check_predictions(
    envelope: dict[str, Any], task: str, classes: list[Any], values: np.ndarray, bias: np.ndarray
) -> None:
    """The predictions shown are the boosters' own (sigmoid / softmax of the margin, or the value)."""
    margin = values.sum(axis=2) + bias
    predictions = [r["prediction"] for r in envelope["results"]]
    if task == "regression":
        np.testing.assert_allclose([p["value"] for p in predictions], margin[:, 0], rtol=0, atol=1e-4)
        return
    proba = (
        np.column_stack([1 - expit(margin[:, 0]), expit(margin[:, 0])])
        if task == "binary"
        else softmax(margin, axis=1)
    )
    got = np.array([[p["probabilities"][c] for c in classes] for p in predictions])
    np.testing.assert_allclose(got, proba, rtol=0, atol=1e-5)


@pytest.mark.parametrize("library", tm.LIBRARIES)
def test_missing_value_is_routed_natively(client, keys, library):
    """A null size is the booster's missing value: the same prediction as NaN given to the library."""
    spec, artifact, data, booster = tm.standalone(library, "regression")
    register(client, keys, spec, artifact, data)
    row = {"size": None, "colour": "red", "weight": 50.0}
    response = client.post(
        f"/v1/models/{spec['name']}/versions/1/predict",
        headers=bearer(keys["explain"]),
        json={"instances": [row]},
    )
    assert response.status_code == 200, response.get_json()
    matrix = np.array([[np.nan, 2.0, 50.0]])
    if library == "xgboost":
        expected = booster.predict(tm.xgboost_matrix(booster, matrix))
    else:
        expected = booster.predict(matrix)
    body = response.get_json()
    value = (body.get("predictions") or body.get("results"))[0]["value"]
    assert value == pytest.approx(float(expected[0]), abs=1e-5)


def test_null_refused_where_the_manifest_does_not_allow_it(client, keys):
    spec, artifact, data, _ = tm.standalone("xgboost", "binary")
    register(client, keys, spec, artifact, data)
    row = {"size": 3.0, "colour": "red", "weight": None}
    response = client.post(
        f"/v1/models/{spec['name']}/versions/1/explain/shap",
        headers=bearer(keys["explain"]),
        json={"instances": [row]},
    )
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"instances.0.weight": ["Expected a number."]}


@pytest.mark.parametrize("build", ["standalone", "pipeline"])
@pytest.mark.parametrize("library", tm.LIBRARIES)
def test_probability_space_is_never_labelled_as_the_margin(client, keys, library, build):
    """In probability space a pipeline's wrapper gets shap's interventional TreeSHAP (as other tree models
    do) and a standalone booster permutation SHAP under ``auto`` (exact ``tree`` is refused); each says so."""
    spec, artifact, data, _ = getattr(tm, build)(library, "binary")
    register(client, keys, spec, artifact, data)
    url = f"/v1/models/{spec['name']}/versions/1/explain/shap"
    rows = request_rows(data)[:3]
    body = {"instances": rows, "output": "probability", "max_evals": 64}
    envelope = client.post(url, headers=bearer(keys["explain"]), json=body).get_json()
    assert envelope["output"]["space"] == "probability"
    expected = "tree" if build == "pipeline" else "permutation"
    assert envelope["method"]["algorithm"] == expected
    assert "implementation" not in envelope["method"]["params"]
    probabilities = [r["prediction"]["probabilities"][spec["favourable_class"]] for r in envelope["results"]]
    np.testing.assert_allclose([r["output_value"] for r in envelope["results"]], probabilities, atol=1e-9)
    refused = client.post(url, headers=bearer(keys["explain"]), json={**body, "algorithm": "tree"})
    assert refused.status_code == (200 if build == "pipeline" else 422)


@pytest.mark.parametrize("task", tm.TASKS)
def test_fixture_boosters_split_natively_on_the_category_codes(task):
    """The standalone fixtures really use native categorical splits (so the oracle tests cover them)."""
    _, _, _, xgb = tm.standalone("xgboost", task)
    assert any('"split": "colour", "split_condition": [' in tree for tree in xgb.get_dump(dump_format="json"))
    _, text, _, _ = tm.standalone("lightgbm", task)
    assert "cat_threshold=" in text.decode()


@pytest.mark.parametrize("setting", ["missing", "early_stopping"])
def test_tree_shap_explains_the_wrapper_as_it_predicts(
    client: Any, keys: dict[str, str], setting: str
) -> None:
    """An XGBClassifier's own ``missing`` value and early-stopping ``best_iteration`` are what its
    ``predict_proba`` uses: TreeSHAP must add up to that wrapper's margin, not to the bare booster's."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from model_store.safe_load import dump_skops

    data = tm.frame()
    prep = ColumnTransformer(
        [("categorical", OneHotEncoder(), ["colour"]), ("numeric", "passthrough", ["size", "weight"])]
    )
    y = tm.labels(data, "binary")
    if setting == "missing":
        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3, n_jobs=1, random_state=0, missing=0.0)
        fitted = Pipeline([("prep", prep), ("model", model)]).fit(data[tm.FEATURES], y)
    else:
        model = xgboost.XGBClassifier(
            n_estimators=200,
            max_depth=3,
            n_jobs=1,
            random_state=0,
            early_stopping_rounds=2,
            learning_rate=0.5,
        )
        encoded = prep.fit_transform(data[tm.FEATURES])
        model.fit(encoded[:200], y[:200], eval_set=[(encoded[200:], y[200:])], verbose=False)
        assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
        fitted = Pipeline([("prep", prep), ("model", model)])
    encoded = prep.transform(data[tm.FEATURES])
    bare = fitted[-1].get_booster().predict(xgboost.DMatrix(encoded), output_margin=True)
    wrapper = fitted[-1].predict(encoded, output_margin=True)
    assert np.abs(bare - wrapper).max() > 1e-3  # the setting changes the model's scores
    spec = tm.manifest(f"xgb-{setting.replace('_', '-')}", "binary", "skops")
    del spec["format"]
    spec["classes"], spec["favourable_class"] = ["0", "1"], "1"
    data = data.assign(binary=data["binary"].map({"no": "0", "yes": "1"}))
    register(client, keys, spec, dump_skops(fitted), data)
    rows = request_rows(data)
    body = {"instances": rows, "algorithm": "tree", "output": "raw", "layout": "columnar"}
    response = client.post(
        f"/v1/models/{spec['name']}/versions/1/explain/shap", json=body, headers=bearer(keys["explain"])
    )
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    frame_rows = pd.DataFrame.from_records(rows, columns=tm.FEATURES).astype({"size": float})
    expected = fitted[-1].predict(prep.transform(frame_rows), output_margin=True)
    assert answer["output"]["space"] == "log_odds"
    assert answer["method"]["params"]["implementation"] == "xgboost pred_contribs"
    for result, margin in zip(answer["results"], expected, strict=True):
        assert result["output_value"] == pytest.approx(float(margin), abs=1e-4)
        total = result["base_value"] + sum(result["attribution_values"])
        assert total == pytest.approx(float(margin), abs=1e-4)

"""Correctness oracle for SHAP: Candor's per-raw-feature attributions against shap called directly.

Every model here is a real scikit-learn Pipeline registered through the real registry (or over HTTP). The
oracle explains the Pipeline's final estimator with shap on the encoded matrix and sums the encoded columns of
each raw feature itself, with a column map built here from the fitted ColumnTransformer (Candor's own mapping
code is deliberately not used). It then checks Candor's answer attribution by attribution, the base value,
the output value against the model's own output in that space, and the target-class rules.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import shap
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from explainers.registry import SHAP, adapter
from explainers.rows import tabular_rows
from model_store.errors import InvalidInput
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

TOL = 1e-6
N_ROWS = 200
CATEGORICAL = {"colour": ["red", "green", "blue"], "size": ["S", "M", "L", "XL"]}
NUMERIC = ["income", "age", "score"]
LOAN_REQUEST = json.loads((Path(__file__).parent / "data" / "loan_shap_request.json").read_text())


# -- tiny fixture models ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], Any]
    task: str  # binary | multiclass | regression
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    scale: bool
    algorithm: str
    space: str
    favourable: str | None = None


def _row(
    name: str,
    make: Callable[[], Any],
    task: str,
    categorical: str,
    numeric: str,
    scale: bool,
    algorithm: str,
    space: str,
    favourable: str | None = None,
) -> Case:
    """One case of the table below; ``categorical`` and ``numeric`` are space-separated feature names."""
    features = tuple(categorical.split()), tuple(numeric.split())
    return Case(name, make, task, *features, scale, algorithm, space, favourable)


GBC = partial(GradientBoostingClassifier, n_estimators=30, max_depth=3, random_state=0)
RFC = partial(RandomForestClassifier, n_estimators=20, max_depth=5, random_state=0)
HGB = partial(HistGradientBoostingClassifier, max_iter=30, max_depth=3, random_state=0)
LR = partial(LogisticRegression, max_iter=1000)
GBR = partial(GradientBoostingRegressor, n_estimators=30, max_depth=3, random_state=0)
RFR = partial(RandomForestRegressor, n_estimators=20, max_depth=6, random_state=0)

_TABLE = [
    # name, model, task, categorical, numeric, scale numeric, algorithm, output space, favourable class
    _row("gbc_binary", GBC, "binary", "colour size", "income age score", False, "tree", "log_odds", "yes"),
    _row("rf_binary", RFC, "binary", "colour", "income age score", True, "tree", "probability", "no"),
    _row("rf_multiclass", RFC, "multiclass", "colour size", "income age", False, "tree", "probability"),
    _row("hgb_binary", HGB, "binary", "colour size", "income age", True, "tree", "log_odds", "yes"),
    _row("hgb_multiclass", HGB, "multiclass", "size", "income age score", False, "tree", "raw"),
    _row("lr_binary", LR, "binary", "colour size", "income age score", True, "linear", "log_odds", "no"),
    _row("lr_multiclass", LR, "multiclass", "colour", "income age", True, "linear", "raw"),
    _row("gbr_regression", GBR, "regression", "colour size", "income age", False, "tree", "raw"),
    _row("rfr_regression", RFR, "regression", "size", "income age score", True, "tree", "raw"),
]
CASES = {c.name: c for c in _TABLE}


def make_data(case: Case, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    full = pd.DataFrame(
        {
            "colour": rng.choice(CATEGORICAL["colour"], N_ROWS).astype(object),
            "size": rng.choice(CATEGORICAL["size"], N_ROWS).astype(object),
            "income": rng.normal(50.0, 15.0, N_ROWS).round(2),
            "age": rng.uniform(18, 80, N_ROWS).round(1),
            "score": rng.integers(0, 10, N_ROWS).astype(float),
        }
    )
    signal = (
        (full["income"] - 50) / 15
        + (full["age"] - 50) / 20
        + 0.2 * (full["score"] - 5)
        + np.where(full["colour"] == "red", 1.0, 0.0)
        - np.where(full["size"] == "S", 0.8, 0.0)
        + rng.normal(0, 0.5, N_ROWS)
    )
    frame = full[list(case.categorical + case.numeric)].copy()
    if case.task == "regression":
        return frame, signal.to_numpy()
    if case.task == "binary":
        return frame, np.where(signal > 0, "yes", "no").astype(object)
    return frame, np.array(["high", "low", "mid"], dtype=object)[np.digitize(signal, [-0.6, 0.6])]


@cache
def fitted(name: str) -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    """(manifest, fitted pipeline, reference frame with the target column) for one case; built once."""
    case = CASES[name]
    frame, target = make_data(case)
    numeric_step: Any = StandardScaler() if case.scale else "passthrough"
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), list(case.categorical)),
                        ("num", numeric_step, list(case.numeric)),
                    ]
                ),
            ),
            ("model", case.make()),
        ]
    ).fit(frame, target)
    features = [{"name": c, "type": "categorical"} for c in case.categorical] + [
        {"name": c, "type": "numeric"} for c in case.numeric
    ]
    manifest: dict[str, Any] = {
        "name": name.replace("_", "-"),
        "task": {"binary": "binary_classification", "multiclass": "multiclass_classification"}.get(
            case.task, "regression"
        ),
        "target": "label",
        "features": features,
    }
    if case.task != "regression":
        manifest["classes"] = [str(c) for c in pipeline.classes_]
    if case.favourable:
        manifest["favourable_class"] = case.favourable
    if len(case.categorical) + len(case.numeric) >= 4:
        manifest["groups"] = {"profile": [case.categorical[0], case.numeric[0]]}
    return manifest, pipeline, frame.assign(label=target)


def explained_rows(name: str) -> list[dict[str, Any]]:
    """Rows to explain: for classifiers two of each predicted class, so every target rule is exercised."""
    _, pipeline, reference = fitted(name)
    features = reference.drop(columns=["label"])
    if CASES[name].task == "regression":
        picked = list(range(6))
    else:
        predicted = pipeline.predict(features)
        picked = [i for c in pipeline.classes_ for i in np.flatnonzero(predicted == c)[:2]]
        assert len(picked) == 2 * len(pipeline.classes_), "fixture should predict every class"
    return features.iloc[picked].to_dict("records")


def register(store: Any, name: str) -> tuple[Any, Any]:
    manifest, pipeline, reference = fitted(name)
    info = store.registry.register_tabular(
        parse_manifest(manifest), dump_skops(pipeline), to_parquet(reference)
    )
    return info, store.registry.load(info)


def explain(store: Any, name: str, rows: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    info, model = register(store, name)
    return adapter(SHAP).explain(info, model, tabular_rows(model, rows), options).to_dict()


# -- the oracle ------------------------------------------------------------------------------------------
def dense(matrix: Any) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, dtype=float)


def raw_feature_of_each_column(pipeline: Pipeline, features: list[str]) -> np.ndarray:
    """Index (into ``features``) of the raw feature behind each column the final estimator reads."""
    steps = [step for _, step in pipeline.steps[:-1]]
    assert len(steps) == 1, "the oracle knows single-step preprocessing only"
    step = steps[0]
    if isinstance(step, StandardScaler | MinMaxScaler):
        return np.arange(len(features))
    assert isinstance(step, ColumnTransformer)
    owners: list[int] = []
    for _, transformer, columns in step.transformers_:
        names = [step.feature_names_in_[c] if isinstance(c, int | np.integer) else c for c in columns]
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if isinstance(transformer, OneHotEncoder):
            assert transformer.drop_idx_ is None
            for column, categories in zip(names, transformer.categories_, strict=True):
                owners += [features.index(column)] * len(categories)
        else:  # passthrough and scalers: one column each
            owners += [features.index(column) for column in names]
    return np.asarray(owners)


def background_rows(reference: pd.DataFrame, rows: int = 100) -> pd.DataFrame:
    return reference.sample(n=rows, random_state=0) if len(reference) > rows else reference


@dataclasses.dataclass
class Oracle:
    values: np.ndarray  # (instances, raw features, outputs)
    base: np.ndarray  # (outputs,)

    def for_class(self, k: int, n_classes: int) -> tuple[np.ndarray, float]:
        """Attributions and base value for class ``k`` (a single binary output is the positive class)."""
        if self.values.shape[2] == 1 and n_classes == 2:
            sign = 1.0 if k == 1 else -1.0
            return sign * self.values[:, :, 0], sign * self.base[0]
        return self.values[:, :, k], self.base[k]


def shap_oracle(
    pipeline: Pipeline, features: list[str], rows: pd.DataFrame, explainer: Any, **call: Any
) -> Oracle:
    encoded = dense(pipeline[:-1].transform(rows[features]))
    values = np.asarray(explainer.shap_values(encoded, **call), dtype=float)
    if values.ndim == 2:
        values = values[:, :, None]
    owners = raw_feature_of_each_column(pipeline, features)
    assert len(owners) == encoded.shape[1]
    grouped = np.stack([values[:, owners == j, :].sum(axis=1) for j in range(len(features))], axis=1)
    return Oracle(grouped, np.asarray(explainer.expected_value, dtype=float).reshape(-1))


def default_oracle(pipeline: Pipeline, features: list[str], reference: pd.DataFrame, rows: pd.DataFrame):
    final = pipeline[-1]
    if isinstance(final, LogisticRegression):
        background = dense(pipeline[:-1].transform(background_rows(reference[features])))
        return shap_oracle(pipeline, features, rows, shap.LinearExplainer(final, background))
    return shap_oracle(pipeline, features, rows, shap.TreeExplainer(final), check_additivity=False)


def model_output(pipeline: Pipeline, rows: pd.DataFrame, space: str, k: int) -> np.ndarray:
    """The model's own output for class ``k`` in ``space`` (computed by the Pipeline, not by Candor)."""
    if space == "probability":
        return pipeline.predict_proba(rows)[:, k]
    if not hasattr(pipeline, "predict_proba"):
        return pipeline.predict(rows)
    margin = np.asarray(pipeline.decision_function(rows), dtype=float)
    if margin.ndim == 1:
        if space == "log_odds":
            p = pipeline.predict_proba(rows)[:, 1]
            np.testing.assert_allclose(margin, np.log(p / (1 - p)), rtol=0, atol=TOL)
        return margin if k == 1 else -margin
    return margin[:, k]


def check_results(
    envelope: dict[str, Any],
    pipeline: Pipeline,
    features: list[str],
    rows: list[dict[str, Any]],
    oracle: Oracle,
    space: str,
    targets: list[int],
) -> None:
    """Candor's results for ``rows`` equal the oracle's class ``targets[i]`` slice, and add up."""
    frame = pd.DataFrame.from_records(rows, columns=features)
    classes = list(getattr(pipeline, "classes_", []))
    outputs = {k: model_output(pipeline, frame, space, k) for k in set(targets)}
    proba = pipeline.predict_proba(frame) if classes else None
    assert envelope["output"]["space"] == space
    assert len(envelope["results"]) == len(rows)
    for i, (result, row, k) in enumerate(zip(envelope["results"], rows, targets, strict=True)):
        expected, expected_base = oracle.for_class(k, len(classes))
        got = {a["feature"]: a["attribution"] for a in result["attributions"]}
        assert sorted(got) == sorted(features)
        np.testing.assert_allclose([got[f] for f in features], expected[i], rtol=0, atol=TOL)
        assert result["base_value"] == pytest.approx(expected_base, abs=TOL)
        assert result["output_value"] == pytest.approx(outputs[k][i], abs=TOL)
        total = result["base_value"] + sum(got.values()) + result["other_attribution"]
        assert total == pytest.approx(result["output_value"], abs=TOL)
        assert abs(result["additivity_residual"]) <= TOL
        magnitudes = [abs(a["attribution"]) for a in result["attributions"]]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert {a["feature"]: a["value"] for a in result["attributions"]} == row
        if proba is not None:
            assert result["target"] == str(classes[k])
            assert result["prediction"]["label"] == str(classes[int(np.argmax(proba[i]))])
            got_proba = [result["prediction"]["probabilities"][str(c)] for c in classes]
            np.testing.assert_allclose(got_proba, proba[i], rtol=0, atol=1e-9)
        else:
            assert result["target"] is None
            assert result["prediction"]["value"] == pytest.approx(outputs[0][i], abs=TOL)
    assert envelope["quality"]["additivity_ok"] is True


def default_targets(name: str, pipeline: Pipeline, rows: list[dict[str, Any]], features: list[str]):
    case = CASES[name]
    if case.task == "regression":
        return [0] * len(rows)
    if case.task == "binary":
        return [list(pipeline.classes_).index(case.favourable)] * len(rows)
    proba = pipeline.predict_proba(pd.DataFrame.from_records(rows, columns=features))
    return list(proba.argmax(axis=1))


# -- every model type, through the registry -------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_default_explanation_equals_shap(store, name):
    case = CASES[name]
    manifest, pipeline, reference = fitted(name)
    features = [f["name"] for f in manifest["features"]]
    rows = explained_rows(name)
    envelope = explain(store, name, rows)

    assert envelope["method"]["name"] == "shap"
    assert envelope["method"]["algorithm"] == case.algorithm
    assert envelope["output"]["target"] is None
    rule = {"binary": "favourable_class", "multiclass": "predicted_class"}.get(case.task, "regression_value")
    assert envelope["output"]["target_rule"] == rule
    targets = default_targets(name, pipeline, rows, features)
    if case.task == "multiclass":
        assert len(set(targets)) == len(pipeline.classes_)  # the default really varies per row
    oracle = default_oracle(pipeline, features, reference, pd.DataFrame.from_records(rows))
    check_results(envelope, pipeline, features, rows, oracle, case.space, targets)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.task != "regression"])
def test_explicit_target_selects_that_class_column(store, name):
    """Each class label as ``target`` gives shap's [example, feature, class] slice (predict_proba's order)."""
    case = CASES[name]
    manifest, pipeline, reference = fitted(name)
    features = [f["name"] for f in manifest["features"]]
    rows = explained_rows(name)
    oracle = default_oracle(pipeline, features, reference, pd.DataFrame.from_records(rows))
    info, model = register(store, name)
    for k, label in enumerate(pipeline.classes_):
        envelope = (
            adapter(SHAP).explain(info, model, tabular_rows(model, rows), {"target": str(label)}).to_dict()
        )
        assert envelope["output"] == {"space": case.space, "target": str(label), "target_rule": "requested"}
        check_results(envelope, pipeline, features, rows, oracle, case.space, [k] * len(rows))


def test_binary_target_flips_every_sign_in_log_odds(store):
    rows = explained_rows("lr_binary")
    info, model = register(store, "lr_binary")
    by_label = {
        label: adapter(SHAP)
        .explain(info, model, tabular_rows(model, rows), {"target": label})
        .to_dict()["results"]
        for label in ("no", "yes")
    }
    for no, yes in zip(by_label["no"], by_label["yes"], strict=True):
        flipped = {a["feature"]: -a["attribution"] for a in yes["attributions"]}
        got = {a["feature"]: a["attribution"] for a in no["attributions"]}
        assert got == pytest.approx(flipped, abs=1e-12)
        assert no["output_value"] == pytest.approx(-yes["output_value"], abs=1e-12)
        assert no["base_value"] == pytest.approx(-yes["base_value"], abs=1e-12)


def test_regression_refuses_a_target(store):
    """A target class on a regressor is refused, and the message says why (not 'Unknown class')."""
    info, model = register(store, "gbr_regression")
    with pytest.raises(InvalidInput) as caught:
        adapter(SHAP).explain(
            info, model, tabular_rows(model, explained_rows("gbr_regression")[:1]), {"target": "yes"}
        )
    assert caught.value.errors == {"target": ["Regression models have no target class."]}


def test_groups_and_top_k_on_a_registered_model(store):
    manifest, _, _ = fitted("gbc_binary")
    rows = explained_rows("gbc_binary")
    info, model = register(store, "gbc_binary")
    full = adapter(SHAP).explain(info, model, tabular_rows(model, rows), {}).to_dict()["results"]
    top = adapter(SHAP).explain(info, model, tabular_rows(model, rows), {"top_k": 2}).to_dict()["results"]
    for whole, short in zip(full, top, strict=True):
        attributions = {a["feature"]: a["attribution"] for a in whole["attributions"]}
        for group in whole["groups"]:
            assert group["features"] == manifest["groups"][group["group"]]
            assert group["attribution"] == pytest.approx(sum(attributions[f] for f in group["features"]))
        assert short["groups"] == whole["groups"]
        assert short["attributions"] == whole["attributions"][:2]
        rest = sum(a["attribution"] for a in whole["attributions"][2:])
        assert short["other_attribution"] == pytest.approx(rest, abs=1e-12)
        assert short["output_value"] == whole["output_value"]


# -- other output spaces and algorithms ---------------------------------------------------------------------
def test_probability_output_equals_interventional_tree_shap(store):
    manifest, pipeline, reference = fitted("gbc_binary")
    features = [f["name"] for f in manifest["features"]]
    rows = explained_rows("gbc_binary")
    info, model = register(store, "gbc_binary")
    background = dense(pipeline[:-1].transform(background_rows(reference[features])))
    explainer = shap.TreeExplainer(
        pipeline[-1], data=background, feature_perturbation="interventional", model_output="probability"
    )
    frame = pd.DataFrame.from_records(rows)
    oracle = shap_oracle(pipeline, features, frame, explainer, check_additivity=False)
    assert oracle.values.shape[2] == 1  # shap gives the positive class only
    for label, k in (("yes", 1), ("no", 0)):
        options = {"output": "probability", "target": label}
        envelope = adapter(SHAP).explain(info, model, tabular_rows(model, rows), options).to_dict()
        assert envelope["method"]["algorithm"] == "tree"
        params = envelope["method"]["params"]
        assert params["feature_perturbation"] == "interventional"
        assert (params["background_rows"], params["background_seed"]) == (100, 0)
        # Class 0 in probability space is 1 - p: attributions flip sign, the base value is 1 - base.
        values, base = oracle.for_class(k, 2)
        if k == 0:
            base = 1.0 + base
        for i, result in enumerate(envelope["results"]):
            got = {a["feature"]: a["attribution"] for a in result["attributions"]}
            np.testing.assert_allclose([got[f] for f in features], values[i], rtol=0, atol=TOL)
            assert result["base_value"] == pytest.approx(base, abs=TOL)
            proba = pipeline.predict_proba(pd.DataFrame.from_records([rows[i]]))[0, k]
            assert result["output_value"] == pytest.approx(proba, abs=TOL)
            assert result["base_value"] + sum(got.values()) == pytest.approx(proba, abs=TOL)
            assert result["target"] == label


def test_permutation_adds_up_exactly_and_is_seeded(store):
    """Permutation SHAP telescopes: base + attributions is the model's probability up to rounding.

    Most of this test's ~10 s is shap compiling its numba kernels on the first permutation call of a
    process (not cached on disk); the explanations themselves take milliseconds."""
    manifest, pipeline, reference = fitted("gbc_binary")
    features = [f["name"] for f in manifest["features"]]
    rows = explained_rows("gbc_binary")[:2]
    info, model = register(store, "gbc_binary")
    options = {"algorithm": "permutation", "seed": 7, "max_evals": 64, "background_rows": 40}
    first = adapter(SHAP).explain(info, model, tabular_rows(model, rows), options).to_dict()
    again = adapter(SHAP).explain(info, model, tabular_rows(model, rows), options).to_dict()
    other = adapter(SHAP).explain(info, model, tabular_rows(model, rows), {**options, "seed": 8}).to_dict()

    assert first["method"]["algorithm"] == "permutation"
    assert first["output"]["space"] == "probability"
    assert first["method"]["params"]["max_evals"] == 64
    assert first["method"]["params"]["background_rows"] == 40
    proba = pipeline.predict_proba(pd.DataFrame.from_records(rows, columns=features))[:, 1]
    # The base value is the model's mean output over the seeded background sample.
    background = background_rows(reference[features], 40)
    base = pipeline.predict_proba(background)[:, 1].mean()
    for envelope in (first, other):
        for i, result in enumerate(envelope["results"]):
            total = result["base_value"] + sum(a["attribution"] for a in result["attributions"])
            assert total == pytest.approx(proba[i], abs=1e-9)
            assert result["output_value"] == pytest.approx(proba[i], abs=1e-9)
            assert result["base_value"] == pytest.approx(base, abs=1e-9)
    assert [r["attributions"] for r in first["results"]] == [r["attributions"] for r in again["results"]]


# -- registered over HTTP ---------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("name", ["hgb_multiclass", "rf_binary"])
def test_model_registered_over_http_equals_shap(client, keys, name):
    case = CASES[name]
    manifest, pipeline, reference = fitted(name)
    features = [f["name"] for f in manifest["features"]]
    url_name = manifest["name"]
    response = client.post(
        f"/v1/models/{url_name}/versions",
        headers=bearer(keys["models:write"]),
        content_type="multipart/form-data",
        data={
            "manifest": json.dumps(manifest),
            "artifact": (io.BytesIO(dump_skops(pipeline)), "model.skops"),
            "reference": (io.BytesIO(to_parquet(reference)), "reference.parquet"),
        },
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["feature_order"] == features
    rows = explained_rows(name)
    oracle = default_oracle(pipeline, features, reference, pd.DataFrame.from_records(rows))
    url = f"/v1/models/{url_name}/versions/1/explain/shap"
    response = client.post(url, headers=bearer(keys["explain"]), json={"instances": rows})
    assert response.status_code == 200, response.get_json()
    envelope = response.get_json()
    assert envelope["method"]["algorithm"] == case.algorithm
    targets = default_targets(name, pipeline, rows, features)
    check_results(envelope, pipeline, features, rows, oracle, case.space, targets)
    for k, label in enumerate(pipeline.classes_):
        response = client.post(
            url, headers=bearer(keys["explain"]), json={"instances": rows, "target": str(label)}
        )
        assert response.status_code == 200, response.get_json()
        check_results(response.get_json(), pipeline, features, rows, oracle, case.space, [k] * len(rows))


# -- the demo models ---------------------------------------------------------------------------------------
def demo_pipeline(app: Any, name: str) -> tuple[Pipeline, pd.DataFrame]:
    registry = app.extensions["candor"].store.registry
    model = registry.load(registry.resolve(name, "production"))
    return model.estimator, model.reference


def demo_rows(name: str, reference: pd.DataFrame) -> list[dict[str, Any]]:
    rows = reference.iloc[[0, 7, 42, 99]].to_dict("records")
    return LOAN_REQUEST["instances"] + rows if name == "loan" else rows


@pytest.mark.parametrize("implementation", ["path_table", "shap"])
@pytest.mark.parametrize("name", ["loan", "clinical"])
def test_demo_model_equals_shap(app, client, auth, name, implementation, monkeypatch):
    if implementation == "shap":  # no table can be built: the backend falls back to shap's own TreeSHAP
        monkeypatch.setattr("explainers.path_table.MAX_UNIQUE_DEPTH", 0)
    pipeline, reference = demo_pipeline(app, name)
    features = list(pipeline.feature_names_in_)
    rows = demo_rows(name, reference)
    response = client.post(
        f"/v1/models/{name}/versions/production/explain/shap", headers=auth, json={"instances": rows}
    )
    assert response.status_code == 200, response.get_json()
    envelope = response.get_json()
    assert envelope["method"]["algorithm"] == "tree"
    assert envelope["method"]["params"]["implementation"] == implementation
    assert envelope["output"]["target_rule"] == "favourable_class"
    oracle = default_oracle(pipeline, features, reference, pd.DataFrame.from_records(rows, columns=features))
    favourable = {"loan": "good", "clinical": "benign"}[name]
    k = list(pipeline.classes_).index(favourable)
    check_results(envelope, pipeline, features, rows, oracle, "log_odds", [k] * len(rows))


def test_loan_groups_top_k_and_unfavourable_target(client, auth):
    url = "/v1/models/loan/versions/production/explain/shap"
    instances = LOAN_REQUEST["instances"]
    full = client.post(url, headers=auth, json={"instances": instances}).get_json()["results"][0]
    top = client.post(url, headers=auth, json=LOAN_REQUEST).get_json()["results"][0]
    bad_body = {"instances": instances, "target": "bad"}
    bad = client.post(url, headers=auth, json=bad_body).get_json()["results"][0]

    attributions = {a["feature"]: a["attribution"] for a in full["attributions"]}
    assert len(attributions) == 20
    assert {g["group"] for g in full["groups"]} == {"applicant", "loan"}
    for group in full["groups"]:
        members = sum(attributions[f] for f in group["features"])
        assert group["attribution"] == pytest.approx(members, abs=1e-12)

    assert len(top["attributions"]) == LOAN_REQUEST["top_k"] == 5
    assert top["attributions"] == full["attributions"][:5]
    rest = sum(a["attribution"] for a in full["attributions"][5:])
    assert top["other_attribution"] == pytest.approx(rest, abs=1e-12)
    assert top["base_value"] + sum(a["attribution"] for a in top["attributions"]) + top[
        "other_attribution"
    ] == pytest.approx(top["output_value"], abs=TOL)
    assert top["groups"] == full["groups"]

    assert bad["target"] == "bad" and full["target"] == "good"
    flipped = {a["feature"]: a["attribution"] for a in bad["attributions"]}
    assert flipped == pytest.approx({f: -v for f, v in attributions.items()}, abs=1e-12)
    assert bad["output_value"] == pytest.approx(-full["output_value"], abs=1e-12)
    assert bad["base_value"] == pytest.approx(-full["base_value"], abs=1e-12)

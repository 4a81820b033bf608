"""The tabulated TreeSHAP (explainers/path_table.py) against shap's own C implementation, called directly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shap
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.tree import DecisionTreeRegressor

from explainers.path_table import PathTable, TableTooLarge


def _data(n: int = 300, features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Few, coarse features so that paths split the same feature more than once and rows sit on thresholds."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 8, size=(n, features)).astype(float)
    y = (x[:, 0] + 2 * x[:, 1] * (x[:, 2] > 3) + rng.normal(0, 1, n) > 7).astype(int)
    y3 = np.digitize(x[:, 0] + x[:, 1] + rng.normal(0, 1, n), [5, 9])
    return x, np.column_stack([y, y3])


def _shap_values(explainer: Any, x: np.ndarray) -> np.ndarray:
    values = np.asarray(explainer.shap_values(x, check_additivity=False))
    return values[:, :, None] if values.ndim == 2 else values


MODELS = {
    "gbc-depth3": lambda: GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0),
    "gbc-depth6": lambda: GradientBoostingClassifier(n_estimators=20, max_depth=6, random_state=0),
    "rf-3class": lambda: RandomForestClassifier(n_estimators=15, max_depth=7, random_state=0),
    "hgb-3class": lambda: HistGradientBoostingClassifier(max_iter=15, random_state=0),
    "gbr": lambda: GradientBoostingRegressor(n_estimators=30, max_depth=4, random_state=0),
    "extra-trees": lambda: ExtraTreesRegressor(n_estimators=10, max_depth=6, random_state=0),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_table_equals_shap_tree_explainer(name: str) -> None:
    x, targets = _data()
    target = targets[:, 1] if "3class" in name else targets[:, 0]
    model = MODELS[name]().fit(x, target)
    explainer = shap.TreeExplainer(model)
    table = PathTable(explainer.model)
    # Rows placed exactly on split thresholds check the "<=" side as well as ordinary rows.
    on_thresholds = np.column_stack([np.full(len(x), v) for v in (3.5, 1.5, 3.5, 6.5)])
    for rows in (x, on_thresholds, x[:1]):
        expected = _shap_values(explainer, rows)
        got = table.shap_values(rows)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_repeated_features_on_one_path_are_combined() -> None:
    x = _data()[0][:, :2]
    model = DecisionTreeRegressor(max_depth=6, random_state=0).fit(x, x[:, 0] * 3 + np.sin(x[:, 1]))
    explainer = shap.TreeExplainer(model)
    table = PathTable(explainer.model)
    assert len(table._arrays[1]) > sum(table._arrays[5]), "the fixture must split a feature twice on a path"
    np.testing.assert_allclose(table.shap_values(x), _shap_values(explainer, x), rtol=0, atol=1e-10)


def test_columns_sum_inputs_into_outputs() -> None:
    x, targets = _data()
    model = GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0).fit(x, targets[:, 0])
    explainer = shap.TreeExplainer(model)
    grouped = PathTable(explainer.model, np.array([0, 0, 1, 1]), 2).shap_values(x)
    per_input = _shap_values(explainer, x)
    np.testing.assert_allclose(grouped[:, 0], per_input[:, 0] + per_input[:, 1], atol=1e-12)
    np.testing.assert_allclose(grouped[:, 1], per_input[:, 2] + per_input[:, 3], atol=1e-12)


def test_deep_paths_and_missing_values_are_left_to_shap() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 14))
    deep = DecisionTreeRegressor(random_state=0).fit(x, rng.normal(size=400))
    with pytest.raises(TableTooLarge):
        PathTable(shap.TreeExplainer(deep).model)
    shallow = DecisionTreeRegressor(max_depth=3, random_state=0).fit(x, rng.normal(size=400))
    table = PathTable(shap.TreeExplainer(shallow).model)
    x[0, 0] = np.nan
    with pytest.raises(TableTooLarge):
        table.shap_values(x)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_boosters_missing_values_follow_each_splits_default(library: str) -> None:
    """XGBoost and LightGBM route a missing value to each split's default branch: a table made with
    ``missing_follows_default`` equals the libraries' own contributions, NaN cells included."""
    x, targets = _data(n=400)
    x[::7, 0] = np.nan
    x[::5, 2] = np.nan
    if library == "xgboost":
        import xgboost

        booster = xgboost.train(
            {"max_depth": 4, "objective": "binary:logistic", "nthread": 1},
            xgboost.DMatrix(x, label=targets[:, 0]),
            num_boost_round=30,
        )
        expected = booster.predict(xgboost.DMatrix(x), pred_contribs=True)[:, :-1]
    else:
        import lightgbm

        booster = lightgbm.train(
            {"num_leaves": 12, "min_data_in_leaf": 5, "objective": "binary", "verbose": -1, "num_threads": 1},
            lightgbm.Dataset(x, label=targets[:, 0]),
            num_boost_round=30,
        )
        expected = booster.predict(x, pred_contrib=True)[:, :-1]
    table = PathTable(shap.TreeExplainer(booster).model, missing_follows_default=True)
    got = table.shap_values(x)[:, :, 0]
    assert np.isnan(x).any(axis=1).sum() > 100
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # the boosters add in float32
    with pytest.raises(TableTooLarge):  # without the flag, missing values are still refused
        PathTable(shap.TreeExplainer(booster).model).shap_values(x)

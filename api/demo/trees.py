"""The boosted-tree demo models on the German credit data: ``loan-xgb`` (a standalone XGBoost booster
with native categorical splits on the manifest's codes, stored as UBJSON) and ``loan-lgbm`` (a
scikit-learn Pipeline, one-hot encoding + LGBMClassifier, stored with skops)."""

from __future__ import annotations

import copy
from typing import Any

import pandas as pd

from model_store.manifest import parse_manifest
from model_store.tabular.formats.codes import manifest_codes

SEED = 0
TREES = 100


def _manifest(base: dict[str, Any], name: str, description: str, data: pd.DataFrame) -> dict[str, Any]:
    manifest = copy.deepcopy(base)
    manifest["name"] = name
    manifest["description"] = description
    for spec in manifest["features"]:
        if spec["type"] == "categorical":
            spec["categories"] = sorted(data[spec["name"]].unique().tolist())
    return manifest


def loan_xgb_model(base: dict[str, Any], data: pd.DataFrame, target: str) -> tuple[dict[str, Any], bytes]:
    """(manifest, UBJSON booster): categories coded by their position in the manifest (sorted)."""
    import xgboost

    manifest = _manifest(
        base,
        "loan-xgb",
        "Credit risk on the UCI Statlog German credit data (CC BY 4.0); a standalone XGBoost booster with "
        "native categorical splits.",
        data,
    )
    manifest["format"] = "xgboost"
    features = [spec["name"] for spec in manifest["features"]]
    coded = manifest_codes(parse_manifest(manifest)).transform(data[features])
    types = ["c" if spec["type"] == "categorical" else "q" for spec in manifest["features"]]
    labels = (data[target] == "good").astype(int).to_numpy()
    matrix = xgboost.DMatrix(
        coded, label=labels, feature_names=features, feature_types=types, enable_categorical=True
    )
    params = {
        "objective": "binary:logistic",
        "max_depth": 3,
        "eta": 0.1,
        "max_cat_to_onehot": 1,
        "nthread": 1,
        "seed": SEED,
    }
    booster = xgboost.train(params, matrix, TREES)
    return manifest, bytes(booster.save_raw("ubj"))


def loan_lgbm_model(base: dict[str, Any], data: pd.DataFrame, target: str) -> tuple[dict[str, Any], Any]:
    """(manifest, fitted Pipeline): one-hot encoding and an LGBMClassifier, for skops."""
    import lightgbm
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    manifest = _manifest(
        base,
        "loan-lgbm",
        "Credit risk on the UCI Statlog German credit data (CC BY 4.0); one-hot encoding and LightGBM in a "
        "scikit-learn Pipeline.",
        data,
    )
    features = data.drop(columns=[target])
    categorical = [s["name"] for s in manifest["features"] if s["type"] == "categorical"]
    numeric = [c for c in features.columns if c not in categorical]
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("numeric", "passthrough", numeric),
        ]
    )
    model = lightgbm.LGBMClassifier(
        n_estimators=TREES,
        num_leaves=8,
        learning_rate=0.1,
        n_jobs=1,
        random_state=SEED,
        deterministic=True,
        verbose=-1,
    )
    pipeline = Pipeline([("prep", prep), ("model", model)]).fit(features, data[target])
    return manifest, pipeline

"""Tiny XGBoost and LightGBM models for the tree-format tests: standalone boosters (native categorical
splits on the manifest's codes, missing sizes) and scikit-learn Pipelines (one-hot + the libraries'
wrappers) stored with skops; binary, multiclass and regression.

A plain module, importable because pyproject puts ``tests`` on pytest's pythonpath.
"""

from __future__ import annotations

import json
from typing import Any

import lightgbm
import numpy as np
import pandas as pd
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

COLOURS = ["blue", "green", "red", "white"]
FEATURES = ["size", "colour", "weight"]
TASKS = ("binary", "multiclass", "regression")
LIBRARIES = ("xgboost", "lightgbm")
TREES = 25
CLASSES = {"binary": ["no", "yes"], "multiclass": ["a", "b", "c"]}
TASK_NAMES = {
    "binary": "binary_classification",
    "multiclass": "multiclass_classification",
    "regression": "regression",
}


def frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """size (10% missing), colour, weight and a label per task; colour matters through ``red``/``white``."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(COLOURS, n)
    size = rng.integers(1, 10, n).astype(float)
    weight = rng.normal(50.0, 10.0, n).round(2)
    score = size + 3.0 * (colour == "red") - 2.0 * (colour == "white") + (weight - 50) / 10
    score = score + rng.normal(0.0, 1.0, n)
    size[rng.random(n) < 0.1] = np.nan
    out = pd.DataFrame({"size": size, "colour": pd.Series(colour, dtype=object), "weight": weight})
    out["binary"] = pd.Series(np.where(score > 6.0, "yes", "no"), dtype=object)
    out["multiclass"] = pd.Series(np.array(["a", "b", "c"])[np.digitize(score, [4.0, 8.0])], dtype=object)
    out["regression"] = score
    return out


def manifest(name: str, task: str, fmt: str, *, categories: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "task": TASK_NAMES[task],
        "features": [
            {"name": "size", "type": "numeric", "missing": True, "min": 1, "max": 9},
            {"name": "colour", "type": "categorical", "categories": categories or list(COLOURS)},
            {"name": "weight", "type": "numeric"},
        ],
        "format": fmt,
    }
    if task in CLASSES:
        data["classes"] = list(CLASSES[task])
    if task == "binary":
        data["favourable_class"] = "yes"
    return data


def codes(data: pd.DataFrame) -> np.ndarray:
    """The manifest's encoding: colour as its position in COLOURS."""
    colour = data["colour"].map({c: float(i) for i, c in enumerate(COLOURS)}).to_numpy(dtype=float)
    return np.column_stack([data["size"].to_numpy(dtype=float), colour, data["weight"].to_numpy(dtype=float)])


def labels(data: pd.DataFrame, task: str) -> np.ndarray:
    if task == "regression":
        return data["regression"].to_numpy(dtype=float)
    return np.asarray([CLASSES[task].index(v) for v in data[task]])


XGB_OBJECTIVES = {
    "binary": "binary:logistic",
    "multiclass": "multi:softprob",
    "regression": "reg:squarederror",
}
LGB_OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}


def xgboost_booster(task: str, data: pd.DataFrame, **params: Any) -> Any:
    matrix = xgboost.DMatrix(
        codes(data),
        label=labels(data, task),
        feature_names=FEATURES,
        feature_types=["q", "c", "q"],
        enable_categorical=True,
    )
    settings = {"objective": XGB_OBJECTIVES[task], "max_depth": 3, "nthread": 1, "seed": 0}
    settings["max_cat_to_onehot"] = 1  # partition-based categorical splits
    if task == "multiclass":
        settings["num_class"] = 3
    return xgboost.train({**settings, **params}, matrix, TREES)


def xgboost_matrix(booster: Any, matrix: np.ndarray) -> Any:
    """The DMatrix a standalone booster reads (its names and feature types, categorical codes)."""
    return xgboost.DMatrix(
        matrix,
        feature_names=booster.feature_names,
        feature_types=booster.feature_types,
        enable_categorical=True,
    )


def lightgbm_booster(task: str, data: pd.DataFrame) -> Any:
    dataset = lightgbm.Dataset(
        codes(data), label=labels(data, task), feature_name=FEATURES, categorical_feature=[1]
    )
    settings: dict[str, Any] = {
        "objective": LGB_OBJECTIVES[task],
        "num_leaves": 8,
        "min_data_in_leaf": 5,
        "min_data_per_group": 5,
        "cat_smooth": 1.0,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
    }
    if task == "multiclass":
        settings["num_class"] = 3
    return lightgbm.train(settings, dataset, TREES)


def standalone(
    library: str, task: str, name: str | None = None
) -> tuple[dict[str, Any], bytes, pd.DataFrame, Any]:
    """(manifest, model file, reference frame, booster) of a standalone booster."""
    data = frame()
    name = name or f"{library[:3]}-{task}"
    if library == "xgboost":
        booster = xgboost_booster(task, data)
        return manifest(name, task, "xgboost"), bytes(booster.save_raw("ubj")), data, booster
    booster = lightgbm_booster(task, data)
    return manifest(name, task, "lightgbm"), booster.model_to_string().encode(), data, booster


def pipeline(
    library: str, task: str, name: str | None = None
) -> tuple[dict[str, Any], bytes, pd.DataFrame, Pipeline]:
    """(manifest, skops file, reference frame, Pipeline) of one-hot colour + the library's wrapper."""
    data = frame()
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
            ("numeric", "passthrough", ["size", "weight"]),
        ]
    )
    model = _wrapper(library, task)
    y = labels(data, task) if library == "xgboost" or task == "regression" else data[task]
    fitted = Pipeline([("prep", prep), ("model", model)]).fit(data[FEATURES], y)
    spec = manifest(name or f"{library[:3]}-pipe-{task}", task, "skops")
    del spec["format"]
    if library == "xgboost" and task in CLASSES:
        data = data.assign(**{task: data[task].map({c: str(i) for i, c in enumerate(CLASSES[task])})})
        spec["classes"] = [str(i) for i in range(len(CLASSES[task]))]
        if task == "binary":
            spec["favourable_class"] = "1"
    return spec, dump_skops(fitted), data, fitted


def _wrapper(library: str, task: str) -> Any:
    if library == "xgboost":
        kind = xgboost.XGBRegressor if task == "regression" else xgboost.XGBClassifier
        return kind(n_estimators=TREES, max_depth=3, n_jobs=1, random_state=0)
    kind = lightgbm.LGBMRegressor if task == "regression" else lightgbm.LGBMClassifier
    return kind(n_estimators=TREES, num_leaves=8, min_child_samples=5, n_jobs=1, random_state=0, verbose=-1)


def form(spec: dict[str, Any], artifact: bytes, data: pd.DataFrame, file_name: str) -> dict[str, Any]:
    import io

    columns = [f["name"] for f in spec["features"]]
    return {
        "manifest": json.dumps(spec),
        "artifact": (io.BytesIO(artifact), file_name),
        "reference": (io.BytesIO(to_parquet(data[columns])), "reference.parquet"),
    }

"""The tiny fixture model shared by the store and REST tests: a yes/no classifier over size, colour and
(optionally) weight, its reference frame, its manifest, and the manifest/reference mutations that several
tests expect to be refused.

A plain module (not a conftest), importable because pyproject puts ``tests`` on pytest's pythonpath.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

FEATURES = ["size", "colour", "weight"]
COLOURS = ["blue", "green", "red"]


def tiny_frame(n: int = 60, seed: int = 0, *, weight: bool = True, noise: bool = True) -> pd.DataFrame:
    """``n`` rows of size, colour, weight (unless ``weight=False``) and a label that is "yes" when
    size + 3 * (colour is red) > 6, plus unit normal noise unless ``noise=False``."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(COLOURS, n)
    size = rng.integers(1, 10, n).astype(float)
    columns: dict[str, Any] = {"size": size, "colour": pd.Series(colour, dtype=object)}
    if weight:
        columns["weight"] = rng.normal(50.0, 10.0, n).round(2)
    score = size + 3.0 * (colour == "red")
    if noise:
        score = score + rng.normal(0.0, 1.0, n)
    columns["label"] = pd.Series(np.where(score > 6.0, "yes", "no"), dtype=object)
    return pd.DataFrame(columns)


def tiny_pipeline(frame: pd.DataFrame, seed: int = 0, *, n_estimators: int = 10) -> Pipeline:
    """One-hot colour, pass the numeric features through, boost; fitted on the features ``frame`` has."""
    features = [name for name in FEATURES if name in frame.columns]
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), ["colour"]),
            ("numeric", "passthrough", [name for name in features if name != "colour"]),
        ]
    )
    model = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=2, random_state=seed)
    return Pipeline([("prep", prep), ("model", model)]).fit(frame[features], frame["label"])


def tiny_manifest(
    name: str = "tiny",
    *,
    weight: bool = True,
    weight_min: float | None = None,
    target: str | None = "label",
) -> dict[str, Any]:
    """A fresh manifest for the tiny model; ``weight_min`` declares a lower bound on weight, and
    ``target=None`` leaves the target out."""
    features: list[dict[str, Any]] = [
        {"name": "size", "type": "numeric"},
        {"name": "colour", "type": "categorical"},
    ]
    if weight:
        features.append({"name": "weight", "type": "numeric"})
        if weight_min is not None:
            features[-1]["min"] = weight_min
    manifest: dict[str, Any] = {"name": name, "task": "binary_classification"}
    if target is not None:
        manifest["target"] = target
    manifest.update({"classes": ["no", "yes"], "favourable_class": "yes", "features": features})
    return manifest


# -- mismatches between a tiny manifest and its reference frame (each is refused with a 422) ---------------
def classes_reversed(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["classes"] = ["yes", "no"]
    return m, f


def feature_undeclared(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["features"] = [s for s in m["features"] if s["name"] != "weight"]
    return m, f


def feature_not_read(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["features"].append({"name": "height", "type": "numeric"})
    return m, f.assign(height=1.0)


def category_never_seen(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    m["features"][1]["categories"] = [*COLOURS, "purple"]
    return m, f


def reference_missing_column(m: dict[str, Any], f: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    return m, f.drop(columns=["weight"])

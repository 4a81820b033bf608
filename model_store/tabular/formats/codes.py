"""The encoding a standalone model (XGBoost, LightGBM, ONNX) reads when the manifest is its only schema: the
features in manifest order, each categorical one as the position of its value in the manifest's ``categories``
(0, 1, ...), numbers and booleans as floats (missing numbers as NaN).

It is a fitted scikit-learn ColumnTransformer, so ``split_pipeline`` maps every coded column back to its raw
feature and every tabular method sees the model as a Pipeline ``codes -> model``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from model_store.errors import InvalidManifest
from model_store.manifest import Manifest
from model_store.tabular.formats.base import LoadedEstimator


class ManifestCodes(ColumnTransformer):  # type: ignore[misc]
    """The manifest's codes as a ColumnTransformer. Its output is the raw-feature matrix that model-agnostic
    explainers build themselves (``explainers.raw_codec``), so they may feed that matrix to the model."""


def reads_manifest_codes(estimator: Any) -> bool:
    """True for ``coded_pipeline``'s ``codes -> model``."""
    steps: list[Any] = getattr(estimator, "steps", None) or []
    return len(steps) == 2 and isinstance(steps[0][1], ManifestCodes)


def manifest_codes(manifest: Manifest) -> ColumnTransformer:
    """A fitted transformer from raw rows (a DataFrame in manifest order) to the coded float matrix."""
    blocks: list[tuple[str, Any, list[str]]] = []
    sample: dict[str, list[Any]] = {}
    longest = max([len(f.categories or []) for f in manifest.features] + [1])
    for spec in manifest.features:
        if spec.type == "categorical":
            if not spec.categories:
                raise InvalidManifest.field(
                    f"features.{spec.name}.categories",
                    "A standalone model's categorical features list their categories in code order.",
                )
            encoder = OrdinalEncoder(categories=[list(spec.categories)], dtype=float)
            blocks.append((f"codes_{spec.name}", encoder, [spec.name]))
            values = list(spec.categories)
        else:
            blocks.append((f"number_{spec.name}", "passthrough", [spec.name]))
            values = [0]
        sample[spec.name] = [values[i % len(values)] for i in range(longest)]
    transformer = ManifestCodes(blocks, remainder="drop", sparse_threshold=0.0)
    frame = pd.DataFrame(sample, columns=manifest.feature_names)
    return transformer.fit(frame)


def coded_pipeline(manifest: Manifest, model: LoadedEstimator) -> Pipeline:
    """``codes -> model``: a standalone model behind the manifest's encoding."""
    return Pipeline([("codes", manifest_codes(manifest)), ("model", model)])

"""Registration checks: the manifest must describe the artifact it comes with, and the reference data.

Omitted categories and numeric bounds are filled in here (from the encoder, else the reference data), so
the stored manifest is complete and shown back to the user.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from model_store.errors import InvalidInput, InvalidManifest, PredictorFailed
from model_store.manifest import FeatureSpec, Manifest
from model_store.tabular.formats.boosters import check_wrapper_agrees
from model_store.tabular.structure import dense

MAX_REFERENCE_ROWS = 200_000


def complete_tabular_manifest(manifest: Manifest, estimator: Any, reference: pd.DataFrame) -> Manifest:
    """Check ``manifest`` against the estimator and reference data; return it with bounds filled in."""
    _check_task(manifest, estimator)
    _check_features(manifest, estimator)
    _check_reference_shape(manifest, reference)
    encoder_categories = _encoder_categories(estimator)
    features = [
        _complete_feature(i, spec, reference[spec.name], encoder_categories.get(spec.name))
        for i, spec in enumerate(manifest.features)
    ]
    completed = dataclasses.replace(manifest, features=features)
    _check_model_scores(estimator, reference, completed)
    _check_missing_scores(estimator, reference, completed)
    return completed


def _check_task(manifest: Manifest, estimator: Any) -> None:
    if manifest.task == "text_classification":
        raise InvalidManifest.field("task", "text_classification needs a Hugging Face model directory.")
    classes = getattr(estimator, "classes_", None)
    if manifest.is_classification:
        if classes is None or not hasattr(estimator, "predict_proba"):
            raise InvalidManifest.field("task", "The artifact is not a probabilistic classifier.")
        actual = [str(c.item() if isinstance(c, np.generic) else c) for c in classes]
        if actual != manifest.classes:
            raise InvalidManifest.field("classes", f"The model's classes_ are {actual}, in this order.")
    elif classes is not None:
        raise InvalidManifest.field("task", "The artifact is a classifier, not a regressor.")


def _check_features(manifest: Manifest, estimator: Any) -> None:
    names_in = getattr(estimator, "feature_names_in_", None)
    declared = manifest.feature_names
    if names_in is None:
        n_in = getattr(estimator, "n_features_in_", len(declared))
        if n_in != len(declared):
            raise InvalidManifest.field(
                "features", f"The model reads {n_in} features; {len(declared)} declared."
            )
        return
    missing = [n for n in names_in if n not in declared]
    extra = [n for n in declared if n not in set(names_in)]
    if missing or extra:
        parts = []
        if missing:
            parts.append("not declared: " + ", ".join(map(str, missing[:20])))
        if extra:
            parts.append("not read by the model: " + ", ".join(extra[:20]))
        raise InvalidManifest.field("features", "; ".join(parts))


def _check_reference_shape(manifest: Manifest, reference: pd.DataFrame) -> None:
    if len(reference) == 0:
        raise InvalidManifest.field("reference", "The reference data has no rows.")
    if len(reference) > MAX_REFERENCE_ROWS:
        raise InvalidManifest.field("reference", f"At most {MAX_REFERENCE_ROWS} reference rows.")
    missing = [n for n in manifest.feature_names if n not in reference.columns]
    if missing:
        raise InvalidManifest.field("reference", "Missing columns: " + ", ".join(missing[:20]))


def _encoder_categories(estimator: Any) -> dict[str, list[Any]]:
    """Raw feature -> categories, from every OneHotEncoder inside a ColumnTransformer."""
    out: dict[str, list[Any]] = {}
    steps = [s for _, s in estimator.steps] if isinstance(estimator, Pipeline) else [estimator]
    for step in steps:
        if not isinstance(step, ColumnTransformer):
            continue
        for _name, transformer, _columns in step.transformers_:
            if isinstance(transformer, OneHotEncoder) and hasattr(transformer, "feature_names_in_"):
                for column, categories in zip(
                    transformer.feature_names_in_, transformer.categories_, strict=True
                ):
                    out[str(column)] = [c.item() if isinstance(c, np.generic) else c for c in categories]
    return out


def _complete_feature(
    index: int, spec: FeatureSpec, column: pd.Series, encoder_cats: list[Any] | None
) -> FeatureSpec:
    field = f"features.{index}"
    if spec.type == "numeric":
        values = pd.to_numeric(column, errors="coerce")
        if spec.missing and column.isna().all():
            raise InvalidManifest.field("reference", f"Column {spec.name} has no values.")
        if spec.missing:
            values = values[column.notna()]
        if values.isna().any() or not np.isfinite(values.to_numpy(dtype=float)).all():
            raise InvalidManifest.field("reference", f"Column {spec.name} has missing or non-numeric values.")
        low = spec.min if spec.min is not None else float(values.min())
        high = spec.max if spec.max is not None else float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InvalidManifest.field(f"{field}.min", "Bounds must be finite.")
        return dataclasses.replace(spec, min=low, max=high)
    if spec.type == "boolean":
        if not column.map(lambda v: isinstance(v, bool | np.bool_)).all():
            raise InvalidManifest.field("reference", f"Column {spec.name} must hold true/false values.")
        return spec
    observed = [v.item() if isinstance(v, np.generic) else v for v in pd.unique(column.dropna())]
    categories = spec.categories
    if categories is None:
        categories = encoder_cats if encoder_cats is not None else sorted(observed, key=str)
    elif encoder_cats is not None:
        unknown = [c for c in categories if c not in encoder_cats]
        if unknown:
            raise InvalidManifest.field(
                f"{field}.categories",
                "Categories the model's encoder never saw: " + ", ".join(map(str, unknown[:20])),
            )
    outside = [v for v in observed if v not in categories]
    if outside or column.isna().any():
        raise InvalidManifest.field(
            "reference",
            f"Column {spec.name} holds values outside its categories: {', '.join(map(str, outside[:10]))}",
        )
    return dataclasses.replace(spec, categories=list(categories))


def _check_missing_scores(estimator: Any, reference: pd.DataFrame, manifest: Manifest) -> None:
    """A feature declared ``missing: true`` must be one the model can score when it is NaN."""
    names_in = getattr(estimator, "feature_names_in_", None)
    columns = list(names_in) if names_in is not None else manifest.feature_names
    score = estimator.predict_proba if manifest.is_classification else estimator.predict
    for index, spec in enumerate(manifest.features):
        if not spec.missing:
            continue
        row = reference[columns].head(1).copy()
        row[spec.name] = np.nan
        try:
            outputs = np.asarray(score(row), dtype=float)
        except Exception as exc:  # the model (or its preprocessing) refuses NaN
            raise InvalidManifest.field(
                f"features.{index}.missing", "The model cannot score a row missing this feature."
            ) from exc
        if not np.isfinite(outputs).all():
            raise InvalidManifest.field(
                f"features.{index}.missing",
                "The model gives no finite output for a row missing this feature.",
            )


def _check_model_scores(estimator: Any, reference: pd.DataFrame, manifest: Manifest) -> None:
    sample = reference[manifest.feature_names].head(5)
    names_in = getattr(estimator, "feature_names_in_", None)
    if names_in is not None:
        sample = sample[list(names_in)]
    try:
        (estimator.predict_proba if manifest.is_classification else estimator.predict)(sample)
    except (InvalidInput, PredictorFailed):
        raise  # already says what failed: a loaded model naming a field, a remote predictor's 502/504
    except Exception as exc:  # any failure here means the artifact and the data disagree
        raise InvalidManifest.field("reference", "The model cannot score the reference data.") from exc
    _check_booster_agrees(estimator, reference[manifest.feature_names].head(200))


def _check_booster_agrees(estimator: Any, rows: pd.DataFrame) -> None:
    """An XGBoost or LightGBM wrapper (alone or ending a Pipeline): its booster must score like it."""
    names_in = getattr(estimator, "feature_names_in_", None)
    if names_in is not None:
        rows = rows[list(names_in)]
    if isinstance(estimator, Pipeline) and len(estimator.steps) >= 2:
        check_wrapper_agrees(estimator.steps[-1][1], dense(estimator[:-1].transform(rows)))
    elif not isinstance(estimator, Pipeline):
        check_wrapper_agrees(estimator, rows.to_numpy(dtype=float))

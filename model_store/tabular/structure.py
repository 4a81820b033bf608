"""How a fitted Pipeline turns raw features into the columns its final estimator reads.

``split_pipeline`` finds the final estimator and, where the preprocessing is made of known parts
(ColumnTransformer with one-hot encoders, scalers and passthrough), the raw feature behind every encoded
column, so attributions computed on the encoded matrix can be summed back to raw features.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

ONE_TO_ONE = (StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler, OrdinalEncoder)


def is_passthrough(transformer: Any) -> bool:
    """``"passthrough"``, or the identity FunctionTransformer fitted ColumnTransformers store in its place."""
    if isinstance(transformer, str):
        return transformer == "passthrough"
    return isinstance(transformer, FunctionTransformer) and transformer.func is None


@dataclasses.dataclass(frozen=True)
class PipelineParts:
    """The final estimator, the preprocessing before it (or None) and the encoded-to-raw column map."""

    estimator: Any
    preprocessor: Any | None
    encoded_to_raw: np.ndarray | None
    """For each encoded column, the index of its raw feature in model order; None when unknown."""


def dense(matrix: Any) -> np.ndarray:
    """A transform's output as a dense float array (ColumnTransformers may return sparse matrices)."""
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, dtype=float)


def split_pipeline(model: Any, feature_order: list[str]) -> PipelineParts:
    if not isinstance(model, Pipeline):
        return PipelineParts(model, None, np.arange(len(feature_order)))
    estimator = model.steps[-1][1]
    steps = [step for _, step in model.steps[:-1] if step not in (None, "passthrough")]
    if not steps:
        return PipelineParts(estimator, None, np.arange(len(feature_order)))
    preprocessor = model[:-1]
    mapping: np.ndarray | None = np.arange(len(feature_order))
    for step in steps:
        mapping = _compose(mapping, _step_mapping(step, len(mapping) if mapping is not None else 0))
        if mapping is None:
            break
    return PipelineParts(estimator, preprocessor, mapping)


def _compose(current: np.ndarray | None, step_map: np.ndarray | None) -> np.ndarray | None:
    if current is None or step_map is None:
        return None
    return current[step_map]


def _step_mapping(step: Any, n_inputs: int) -> np.ndarray | None:
    """For one preprocessing step, the input column behind each output column."""
    if isinstance(step, ColumnTransformer):
        return column_transformer_mapping(step)
    if isinstance(step, ONE_TO_ONE) or (isinstance(step, SimpleImputer) and not step.add_indicator):
        return np.arange(n_inputs)
    if isinstance(step, OneHotEncoder):
        return _one_hot_mapping(step, list(range(n_inputs)))
    return None


def column_transformer_mapping(ct: ColumnTransformer) -> np.ndarray | None:
    names_in = list(ct.feature_names_in_) if hasattr(ct, "feature_names_in_") else None
    out: list[int] = []
    for _name, transformer, columns in ct.transformers_:
        if transformer == "drop":
            continue
        indices = column_indices(columns, names_in, ct.n_features_in_)
        if len(indices) == 0:
            continue
        if (
            is_passthrough(transformer)
            or isinstance(transformer, ONE_TO_ONE)
            or (isinstance(transformer, SimpleImputer) and not transformer.add_indicator)
        ):
            out.extend(indices)
        elif isinstance(transformer, OneHotEncoder):
            one_hot = _one_hot_mapping(transformer, indices)
            if one_hot is None:
                return None
            out.extend(int(i) for i in one_hot)
        else:
            return None
    return np.asarray(out, dtype=int)


def column_indices(columns: Any, names_in: list[str] | None, n_features: int) -> list[int]:
    """A ColumnTransformer's column selection (slice, mask, names or positions) as positions."""
    if isinstance(columns, slice):
        return list(range(n_features))[columns]
    cols = list(columns) if not isinstance(columns, str | int) else [columns]
    if cols and isinstance(cols[0], bool | np.bool_):
        return [i for i, keep in enumerate(cols) if keep]
    if cols and isinstance(cols[0], str):
        if names_in is None:
            raise ValueError("string columns without feature names")
        return [names_in.index(str(c)) for c in cols]
    return [int(c) for c in cols]


def _one_hot_mapping(encoder: OneHotEncoder, indices: list[int]) -> np.ndarray | None:
    if getattr(encoder, "_infrequent_enabled", False):
        return None
    drop_idx = encoder.drop_idx_
    out: list[int] = []
    for position, (index, categories) in enumerate(zip(indices, encoder.categories_, strict=True)):
        dropped = drop_idx is not None and drop_idx[position] is not None
        out.extend([index] * (len(categories) - int(dropped)))
    return np.asarray(out, dtype=int)

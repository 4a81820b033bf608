"""A NumPy re-implementation of common ColumnTransformers for already-validated records.

scikit-learn's ColumnTransformer spends ~8 ms on a one-row DataFrame; most of a single-row explanation.
``compile_encoder`` rebuilds the same transform from the fitted parameters (one-hot, ordinal codes, standard
and min-max scaling, passthrough, drop) and is only used after it reproduced the real transform on reference
rows (missing numbers, NaN, compare equal).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, OrdinalEncoder, StandardScaler

from model_store.tabular.structure import column_indices, dense, is_passthrough

Records = Sequence[dict[Any, Any]]
Columns = Mapping[str, list[Any]]
BlockEncoder = Callable[[Records, Columns | None], np.ndarray]
"""Encodes records; from their values per feature (``columns``) when the caller has them."""
Encoder = Callable[[Records, Columns | None], np.ndarray]


def compile_encoder(preprocessor: Any, verify_on: pd.DataFrame) -> Encoder | None:
    """A fast encoder equal to ``preprocessor.transform``, or None when it cannot be built or verified."""
    ct = preprocessor
    if isinstance(ct, Pipeline) and len(ct.steps) == 1:
        ct = ct.steps[0][1]
    if not isinstance(ct, ColumnTransformer) or not hasattr(ct, "feature_names_in_"):
        return None
    blocks: list[BlockEncoder] = []
    names = list(ct.feature_names_in_)
    for _name, transformer, columns in ct.transformers_:
        if transformer == "drop":
            continue
        cols = [names[i] for i in column_indices(columns, names, len(names))]
        if not cols:
            continue
        block = _block(transformer, cols)
        if block is None:
            return None
        blocks.append(block)

    def encode(records: Records, columns: Columns | None = None) -> np.ndarray:
        if not blocks:
            return np.empty((len(records), 0))
        return np.hstack([block(records, columns) for block in blocks])

    try:
        expected = dense(preprocessor.transform(verify_on))
        got = encode(verify_on.to_dict("records"))
    except (ValueError, TypeError, KeyError):
        return None  # e.g. a string column passed through: sklearn's own transform is used instead
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-12, atol=1e-12, equal_nan=True):
        return None
    return encode


def _column(records: Records, columns: Columns | None, col: str) -> list[Any]:
    return columns[col] if columns is not None else [r[col] for r in records]


def _numeric(records: Records, columns: Columns | None, cols: list[str]) -> np.ndarray:
    out = np.empty((len(records), len(cols)))
    for index, col in enumerate(cols):  # a column at a time: one NumPy conversion each
        out[:, index] = np.array(_column(records, columns, col), dtype=float)
    return out


def _block(transformer: Any, cols: list[str]) -> BlockEncoder | None:
    if is_passthrough(transformer):
        return lambda records, columns: _numeric(records, columns, cols)
    if type(transformer) is StandardScaler:
        mean = transformer.mean_ if transformer.with_mean else np.zeros(len(cols))
        scale = transformer.scale_ if transformer.with_std else np.ones(len(cols))
        return lambda records, columns: (_numeric(records, columns, cols) - mean) / scale
    if type(transformer) is MinMaxScaler and not transformer.clip:
        return lambda records, columns: (
            _numeric(records, columns, cols) * transformer.scale_ + transformer.min_
        )
    if type(transformer) is OneHotEncoder and not getattr(transformer, "_infrequent_enabled", False):
        return _one_hot(transformer, cols)
    if type(transformer) is OrdinalEncoder and transformer.handle_unknown == "error":
        return _ordinal(transformer, cols)
    return None


def _ordinal(encoder: OrdinalEncoder, cols: list[str]) -> BlockEncoder | None:
    """Each category as its position (the codes a standalone booster reads; validated values only)."""
    if getattr(encoder, "_infrequent_enabled", False):
        return None
    lookups = [{_key(c): float(i) for i, c in enumerate(categories)} for categories in encoder.categories_]

    def encode(records: Records, columns: Columns | None) -> np.ndarray:
        out = np.empty((len(records), len(cols)))
        for index, (col, lookup) in enumerate(zip(cols, lookups, strict=True)):
            values = _column(records, columns, col)
            out[:, index] = np.fromiter(map(lookup.__getitem__, values), float, len(records))
        return out

    return encode


def _one_hot(encoder: OneHotEncoder, cols: list[str]) -> BlockEncoder:
    lookups: list[dict[Any, int]] = []
    offsets: list[int] = []
    width = 0
    drop_idx = encoder.drop_idx_
    for position, categories in enumerate(encoder.categories_):
        dropped = None if drop_idx is None else drop_idx[position]
        lookup: dict[Any, int] = {}
        slot = 0
        for index, category in enumerate(categories):
            if dropped is not None and index == dropped:
                continue
            lookup[_key(category)] = slot
            slot += 1
        lookups.append(lookup)
        offsets.append(width)
        width += slot

    def encode(records: Records, columns: Columns | None) -> np.ndarray:
        out = np.zeros((len(records), width))
        rows = np.arange(len(records))
        for col, lookup, offset in zip(cols, lookups, offsets, strict=True):
            values = _column(records, columns, col)
            found = map(lookup.get, values, repeat(-1))  # validated records hold plain values
            slots = np.fromiter(found, dtype=np.intp, count=len(records))
            known = slots >= 0  # unknown categories encode as all zeros (handle_unknown="ignore")
            out[rows[known], offset + slots[known]] = 1.0
        return out

    return encode


def _key(value: Any) -> Any:
    """Categories compare by value: numpy scalars and Python scalars hash alike."""
    return value.item() if isinstance(value, np.generic) else value

"""``compile_encoder`` must reproduce ``preprocessor.transform`` exactly, or decline (return None)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    PolynomialFeatures,
    RobustScaler,
    StandardScaler,
)

from model_store.tabular.fast_encoder import compile_encoder

N = 120
COLOURS = ["red", "green", "blue"]
SIZES = ["S", "M", "L"]
GRADES = [1, 2, 5, 9]
BOUNDS = {"x": (-50.0, 150.0), "y": (0.0, 1000.0), "z": (-5.0, 5.0)}


def make_frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "colour": rng.choice(COLOURS, n).astype(object),
            "size": rng.choice(SIZES, n).astype(object),
            "grade": rng.choice(GRADES, n),
            "x": rng.normal(40.0, 25.0, n),
            "y": rng.uniform(0.0, 1000.0, n),
            "z": rng.integers(-5, 6, n).astype(float),
        }
    )


FRAME = make_frame()
WITH_FLAG = FRAME.assign(member=np.where(np.arange(N) % 3 == 0, "yes", "no").astype(object))


def dense(matrix: Any) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix, dtype=float)


def fit(preprocessor: Any, frame: pd.DataFrame = FRAME) -> Any:
    return preprocessor.fit(frame)


def assert_same_as_sklearn(preprocessor: Any, encode: Any, frame: pd.DataFrame) -> None:
    expected = dense(preprocessor.transform(frame))
    records = frame.to_dict("records")
    got = encode(records)
    assert got.shape == expected.shape
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)
    columns = {name: [r[name] for r in records] for name in frame.columns}  # as validation reads them
    np.testing.assert_array_equal(encode(records, columns), expected)


SUPPORTED = {
    "one_hot": lambda: ColumnTransformer([("oh", OneHotEncoder(), ["colour", "size"])]),
    "one_hot_drop_first": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(drop="first"), ["colour", "grade"]), ("num", "passthrough", ["x"])]
    ),
    "one_hot_ignore_unknown": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(handle_unknown="ignore"), ["colour", "size"]), ("num", StandardScaler(), ["x"])]
    ),
    "integer_categories": lambda: ColumnTransformer([("oh", OneHotEncoder(), ["grade"])]),
    "standard_scaler": lambda: ColumnTransformer([("std", StandardScaler(), ["x", "y", "z"])]),
    "standard_scaler_no_mean": lambda: ColumnTransformer(
        [("std", StandardScaler(with_mean=False), ["x", "y"])]
    ),
    "standard_scaler_no_std": lambda: ColumnTransformer([("std", StandardScaler(with_std=False), ["x"])]),
    "min_max_scaler": lambda: ColumnTransformer(
        [("mm", MinMaxScaler(), ["x", "y"]), ("mm2", MinMaxScaler(feature_range=(-2, 3)), ["z"])]
    ),
    "passthrough": lambda: ColumnTransformer([("num", "passthrough", ["x", "z", "grade"])]),
    "remainder_drop": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(), ["size"]), ("std", StandardScaler(), ["y"])], remainder="drop"
    ),
    "remainder_passthrough": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(), ["colour", "size"])], remainder="passthrough"
    ),
    "remainder_scaled": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(), ["colour", "size", "grade"])], remainder=StandardScaler()
    ),
    "integer_and_mask_columns": lambda: ColumnTransformer(
        [
            ("oh", OneHotEncoder(), [0, 2]),
            ("mm", MinMaxScaler(), [c in ("x", "y") for c in FRAME.columns]),
            ("num", "passthrough", slice(5, 6)),
        ]
    ),
    "sparse_output": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(), ["colour", "size", "grade"]), ("num", "passthrough", ["x"])],
        sparse_threshold=1.0,
    ),
    "ordinal_codes": lambda: ColumnTransformer(
        [("codes", OrdinalEncoder(), ["colour", "grade"]), ("num", "passthrough", ["x"])]
    ),
    "pipeline_of_one_column_transformer": lambda: Pipeline(
        [("ct", ColumnTransformer([("oh", OneHotEncoder(), ["colour"]), ("num", StandardScaler(), ["y"])]))]
    ),
}


@pytest.mark.parametrize("kind", list(SUPPORTED))
def test_reproduces_the_sklearn_transform(kind):
    preprocessor = fit(SUPPORTED[kind]())
    encode = compile_encoder(preprocessor, FRAME.head(50))
    assert encode is not None, f"{kind} should compile"
    assert_same_as_sklearn(preprocessor, encode, make_frame(n=40, seed=1))


def test_drop_if_binary_drops_only_in_binary_columns():
    preprocessor = ColumnTransformer(
        [
            ("oh", OneHotEncoder(drop="if_binary", sparse_output=False), ["colour", "member"]),
            ("num", "passthrough", ["z"]),
        ]
    ).fit(WITH_FLAG)
    assert preprocessor.named_transformers_["oh"].drop_idx_.tolist() == [None, 0]
    encode = compile_encoder(preprocessor, WITH_FLAG.head(50))
    assert encode is not None
    assert_same_as_sklearn(preprocessor, encode, WITH_FLAG.tail(40))


def test_unknown_categories_encode_as_all_zeros():
    preprocessor = fit(SUPPORTED["one_hot_ignore_unknown"]())
    encode = compile_encoder(preprocessor, FRAME)
    rows = FRAME.head(2).assign(colour=["purple", "red"], size=["S", "XXL"])
    assert_same_as_sklearn(preprocessor, encode, rows)
    assert encode(rows.to_dict("records"))[0, :3].tolist() == [0.0, 0.0, 0.0]


def test_unknown_category_with_drop_first_and_ignore():
    preprocessor = fit(
        ColumnTransformer([("oh", OneHotEncoder(drop="first", handle_unknown="ignore"), ["colour"])])
    )
    encode = compile_encoder(preprocessor, FRAME)
    assert encode is not None
    rows = FRAME.head(4).assign(colour=["purple", "blue", "green", "red"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unknown categories.*", category=UserWarning)
        expected = dense(preprocessor.transform(rows))
    np.testing.assert_array_equal(encode(rows.to_dict("records")), expected)
    # drop="first" drops "blue" (categories sort): it and the unknown both encode as zeros.
    assert expected[:2].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_integer_categories_match_float_and_python_int_values():
    """Validated numeric values arrive as floats; 2.0 must find the category 2 like sklearn does."""
    preprocessor = fit(SUPPORTED["integer_categories"]())
    encode = compile_encoder(preprocessor, FRAME)
    rows = [{"grade": g} for g in (1, 2.0, np.int64(5), 9.0)]
    expected = dense(preprocessor.transform(FRAME.head(4).assign(grade=[1, 2, 5, 9])))
    np.testing.assert_array_equal(encode(rows), expected)
    assert encode(rows).sum(axis=1).tolist() == [1.0, 1.0, 1.0, 1.0]


class DoublingScaler(StandardScaler):
    """Not exactly a StandardScaler: its transform differs, so the fast path must not impersonate it."""

    def transform(self, X, copy=None):
        return super().transform(X, copy=copy) * 2.0


UNSUPPORTED = {
    "function_transformer": lambda: ColumnTransformer(
        [("log", FunctionTransformer(np.log1p), ["y"]), ("num", "passthrough", ["x"])]
    ),
    "polynomial_features": lambda: ColumnTransformer([("poly", PolynomialFeatures(2), ["x", "y"])]),
    "robust_scaler": lambda: ColumnTransformer([("rob", RobustScaler(), ["x"])]),
    "clipped_min_max": lambda: ColumnTransformer([("mm", MinMaxScaler(clip=True), ["x"])]),
    "infrequent_categories": lambda: ColumnTransformer(
        [("oh", OneHotEncoder(min_frequency=50, handle_unknown="infrequent_if_exist"), ["colour", "grade"])]
    ),
    "scaler_subclass": lambda: ColumnTransformer([("std", DoublingScaler(), ["x"])]),
    "bare_scaler": lambda: StandardScaler(),
    "two_step_pipeline": lambda: Pipeline(
        [("ct", ColumnTransformer([("num", "passthrough", ["x", "y"])])), ("poly", PolynomialFeatures(2))]
    ),
}


@pytest.mark.parametrize("kind", list(UNSUPPORTED))
def test_declines_what_it_cannot_reproduce(kind):
    """Unsupported preprocessing yields None (the caller then uses sklearn), never an exception."""
    preprocessor = UNSUPPORTED[kind]()
    frame = FRAME if isinstance(preprocessor, ColumnTransformer | Pipeline) else FRAME[["x", "y", "z"]]
    preprocessor.fit(frame)
    assert compile_encoder(preprocessor, frame.head(50)) is None


@pytest.mark.parametrize(
    "preprocessor",
    [
        ColumnTransformer([("std", StandardScaler(), ["x"]), ("raw", "passthrough", ["member"])]),
        ColumnTransformer([("oh", OneHotEncoder(), ["colour"])], remainder="passthrough"),
    ],
    ids=["passthrough", "remainder_passthrough"],
)
def test_declines_string_columns_passed_through(preprocessor):
    """A string column passed through cannot become a float matrix: decline (None), do not raise.

    ``TabularModel`` calls ``compile_encoder`` unguarded while loading a version, so an exception here makes
    every request on such a model fail, although sklearn's own transform would serve it."""
    preprocessor.fit(WITH_FLAG)
    assert compile_encoder(preprocessor, WITH_FLAG.head(50)) is None


# -- property-based: random rows from the fitted categories and ranges ---------------------------------------
PROPERTY_PREPROCESSOR = fit(
    ColumnTransformer(
        [
            ("oh", OneHotEncoder(handle_unknown="ignore"), ["colour", "grade"]),
            ("oh_first", OneHotEncoder(drop="first"), ["size"]),
            ("std", StandardScaler(), ["x"]),
            ("mm", MinMaxScaler(feature_range=(-1, 1)), ["y"]),
        ],
        remainder="passthrough",
    )
)
PROPERTY_ENCODER = compile_encoder(PROPERTY_PREPROCESSOR, FRAME)


def finite(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False)


ROW = st.fixed_dictionaries(
    {
        "colour": st.sampled_from([*COLOURS, "unseen"]),
        "size": st.sampled_from(SIZES),
        "grade": st.sampled_from(GRADES),
        "x": finite(*BOUNDS["x"]),
        "y": finite(*BOUNDS["y"]),
        "z": finite(*BOUNDS["z"]),
    }
)


@settings(max_examples=60, deadline=None, database=None)
@given(rows=st.lists(ROW, min_size=1, max_size=6))
def test_random_rows_match_sklearn(rows):
    assert PROPERTY_ENCODER is not None
    frame = pd.DataFrame.from_records(rows, columns=list(FRAME.columns))
    expected = dense(PROPERTY_PREPROCESSOR.transform(frame))
    np.testing.assert_array_equal(PROPERTY_ENCODER(rows), expected)


INTEGER_ONLY = ColumnTransformer([("oh", OneHotEncoder(drop="first"), ["grade"])]).fit(FRAME[["grade"]])


@settings(max_examples=30, deadline=None, database=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"grade": st.sampled_from(GRADES).flatmap(lambda g: st.sampled_from([g, float(g)]))}
        ),
        min_size=1,
        max_size=5,
    )
)
def test_random_integer_category_rows_match_sklearn(rows):
    """Integer categories looked up with ints and with the floats validation produces (2.0 is 2)."""
    encode = compile_encoder(INTEGER_ONLY, FRAME[["grade"]])
    assert encode is not None
    frame = pd.DataFrame({"grade": [int(r["grade"]) for r in rows]})
    np.testing.assert_array_equal(encode(rows), dense(INTEGER_ONLY.transform(frame)))

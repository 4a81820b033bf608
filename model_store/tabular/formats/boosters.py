"""XGBoost and LightGBM boosters behind the scikit-learn interface, and their own SHAP contributions.

A ``BoosterRuntime`` is one library's booster seen through four calls (margin, prediction, contributions,
and what it reads). ``BoosterClassifier`` / ``BoosterRegressor`` make a standalone booster answer like a
scikit-learn estimator at the end of the manifest's ``codes`` Pipeline; ``native_runtime`` finds the
booster behind such an adapter or behind the libraries' own scikit-learn wrappers (XGBClassifier, ...).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from model_store.errors import InvalidManifest
from model_store.manifest import Manifest
from model_store.tabular.formats.base import LoadedEstimator

_threads = 1
"""Threads a booster uses per call (``set_booster_threads``)."""


def set_booster_threads(threads: int) -> None:
    """Threads each XGBoost or LightGBM call uses from now on (XGBoost boosters take it when loaded): one by
    default, right when every core has a busy request thread; more for a server with fewer (one worker
    explaining large batches)."""
    global _threads
    if threads > 0:
        _threads = threads


MIN_ROWS_PER_THREAD = 256
"""A call that takes its threads per call (LightGBM's, Candor's row blocks) on fewer rows per thread runs on
fewer: handing rows to a second thread costs more than it saves there, and waits whenever the other core is
busy."""


def booster_threads(rows: int | None = None) -> int:
    """The setting, or for a call on ``rows`` rows, as many of its threads as have ``MIN_ROWS_PER_THREAD``
    rows each (at least one)."""
    if rows is None:
        return _threads
    return max(1, min(_threads, rows // MIN_ROWS_PER_THREAD))


def is_library_wrapper(estimator: Any) -> bool:
    """An XGBoost or LightGBM scikit-learn wrapper (XGBClassifier, LGBMRegressor, ...)."""
    module = type(estimator).__module__
    return module.startswith(("xgboost.", "lightgbm.")) and hasattr(estimator, "n_jobs")


def follow_threads(estimator: Any) -> None:
    """A library wrapper's own calls (``predict_proba``, ``decision_function``) on ``booster_threads()``
    (changed only with the setting: an XGBoost wrapper reconfigures its booster, which concurrent requests
    share)."""
    if is_library_wrapper(estimator) and estimator.n_jobs != _threads:
        estimator.set_params(n_jobs=_threads)


class BoosterRuntime:
    """One library's booster: subclasses implement the four calls on a float matrix (NaN = missing)."""

    library: str
    implementation: str
    """The name of the library's exact TreeSHAP, recorded in the explanation's method."""

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw_contributions(self, matrix: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    input_dtype: Any = np.float64
    """The type the booster compares its inputs in."""

    def trees(self, missing_columns: Collection[int]) -> Any:
        """The booster for shap's tree reader when its trees alone compute what this runtime predicts (every
        tree; a missing value, possible only in ``missing_columns``, taking each split's default branch),
        else None."""
        return None

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Margin-space contributions shaped (rows, outputs, features + 1); the last column is the bias."""
        matrix = np.asarray(matrix, dtype=float)
        out = np.asarray(self.raw_contributions(matrix), dtype=float)
        width = matrix.shape[1] + 1
        if out.ndim == 3:
            return out
        return out.reshape(len(matrix), out.shape[1] // width, width)


class BoosterModel(LoadedEstimator):
    """A standalone booster reading the coded matrix (see ``formats/codes.py``)."""

    def __init__(self, runtime: BoosterRuntime | None = None, n_features: int = 0) -> None:
        self.runtime = runtime
        self.n_features = n_features

    @property
    def n_features_in_(self) -> int:
        return self.n_features

    def _runtime(self) -> BoosterRuntime:
        if self.runtime is None:
            raise TypeError("This adapter holds no booster.")
        return self.runtime

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        return self._runtime().contributions(matrix)


class BoosterClassifier(BoosterModel):
    """Class index = the booster's output index; labels come from the manifest."""

    _estimator_type = "classifier"

    def __init__(
        self, runtime: BoosterRuntime | None = None, n_features: int = 0, classes: Any = None
    ) -> None:
        super().__init__(runtime, n_features)
        self.classes = classes
        self.classes_ = np.asarray(list(classes or []), dtype=object)

    def predict_proba(self, matrix: Any) -> np.ndarray:
        proba = np.asarray(self._runtime().predict(np.asarray(matrix, dtype=float)), dtype=float)
        return np.column_stack([1.0 - proba, proba]) if proba.ndim == 1 else proba

    def decision_function(self, matrix: Any) -> np.ndarray:
        return np.asarray(self._runtime().margin(np.asarray(matrix, dtype=float)), dtype=float)

    def predict(self, matrix: Any) -> np.ndarray:
        return np.asarray(self.classes_[self.predict_proba(matrix).argmax(axis=1)])


class BoosterRegressor(BoosterModel):
    _estimator_type = "regressor"

    def predict(self, matrix: Any) -> np.ndarray:
        return np.asarray(self._runtime().predict(np.asarray(matrix, dtype=float)), dtype=float)


def adapter_for(manifest: Manifest, runtime: BoosterRuntime, n_features: int) -> BoosterModel:
    if manifest.is_classification:
        return BoosterClassifier(runtime, n_features, list(manifest.classes or []))
    return BoosterRegressor(runtime, n_features)


def check_booster(
    manifest: Manifest, names: list[str] | None, categorical: set[int], n_outputs: int, kind: str
) -> None:
    """Refuse a booster that reads other features, other categoricals or another task than the manifest's.

    ``kind`` is ``binary``, ``multiclass`` or ``regression`` (from the booster's objective)."""
    declared = manifest.feature_names
    n_features = len(names) if names is not None else -1
    if names is not None and names != declared:
        if n_features != len(declared):
            raise InvalidManifest.field(
                "features", f"The model reads {n_features} features; {len(declared)} declared."
            )
        wrong = [f"{d} (the model's is {n})" for d, n in zip(declared, names, strict=True) if d != n]
        raise InvalidManifest.field(
            "features", "Not the model's feature names, in its order: " + ", ".join(wrong[:10])
        )
    for index in sorted(categorical):
        if index >= len(declared) or manifest.features[index].type != "categorical":
            name = declared[index] if index < len(declared) else str(index)
            raise InvalidManifest.field(
                f"features.{index}.type",
                f"The model splits on {name} as a category; declare it categorical, its categories in "
                "code order.",
            )
    _check_kind(manifest, n_outputs, kind)


def _check_kind(manifest: Manifest, n_outputs: int, kind: str) -> None:
    expected = {
        "binary_classification": "binary",
        "multiclass_classification": "multiclass",
        "regression": "regression",
    }[manifest.task]
    if kind != expected:
        raise InvalidManifest.field("task", f"The model's objective is {kind}, not {expected}.")
    if kind == "multiclass" and n_outputs != len(manifest.classes or []):
        raise InvalidManifest.field(
            "classes", f"The model has {n_outputs} classes; {len(manifest.classes or [])} declared."
        )


def check_feature_count(manifest: Manifest, n_features: int) -> None:
    if n_features != len(manifest.features):
        raise InvalidManifest.field(
            "features", f"The model reads {n_features} features; {len(manifest.features)} declared."
        )


_wrapper_runtimes: weakref.WeakKeyDictionary[Any, BoosterRuntime | None] = weakref.WeakKeyDictionary()
"""One runtime per loaded wrapper (an XGBoost runtime holds a booster copy per thread count)."""


def native_runtime(estimator: Any) -> BoosterRuntime | None:
    """The booster behind a standalone adapter or an XGBoost / LightGBM scikit-learn wrapper, else None."""
    if isinstance(estimator, BoosterModel):
        return estimator.runtime
    if not is_library_wrapper(estimator):
        return None
    if estimator not in _wrapper_runtimes:
        _wrapper_runtimes[estimator] = _wrapper_runtime(estimator)
    return _wrapper_runtimes[estimator]


def _wrapper_runtime(estimator: Any) -> BoosterRuntime | None:
    module = type(estimator).__module__
    if module.startswith("xgboost.") and hasattr(estimator, "get_booster"):
        from model_store.tabular.formats.xgboost_format import XGBoostRuntime

        missing = np.nan if estimator.missing is None else float(estimator.missing)
        iteration_range = estimator._get_iteration_range(None)  # the wrapper's own (best_iteration)
        return XGBoostRuntime(estimator.get_booster(), missing, tuple(iteration_range))
    if module.startswith("lightgbm.") and hasattr(estimator, "booster_"):
        from model_store.tabular.formats.lightgbm_format import LightGBMRuntime

        return LightGBMRuntime(estimator.booster_)
    return None


def wrapper_predictions(estimator: Any, check: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """An XGBoost wrapper's ``predict_proba`` (classifiers) or ``predict`` as a column, computed through its
    booster on the threads each batch warrants (``booster_threads(rows)``: the wrapper's own calls run on
    its ``n_jobs`` whatever the batch), when it reproduces the wrapper's own on ``check`` rows exactly;
    else None."""
    if not (is_library_wrapper(estimator) and type(estimator).__module__.startswith("xgboost.")):
        return None
    runtime = native_runtime(estimator)
    if runtime is None:
        return None
    classifier = hasattr(estimator, "predict_proba")

    def predict(matrix: np.ndarray) -> np.ndarray:
        out = runtime.predict(matrix).astype(np.float32)  # float32 as the booster wrote it
        if not classifier:
            return out.astype(float).reshape(-1, 1)
        if out.ndim == 1:  # the wrapper's own binary layout, in its float32 arithmetic
            return np.column_stack([np.float32(1.0) - out, out]).astype(float)
        return out.astype(float)

    try:
        own = estimator.predict_proba(check) if classifier else estimator.predict(check).reshape(-1, 1)
        same = np.array_equal(predict(check), np.asarray(own, dtype=float))
    except (ValueError, TypeError):
        return None
    return predict if same else None


def margin_function(estimator: Any) -> Any:
    """The estimator's margin (``decision_function``, or the booster's raw score for the XGBoost and
    LightGBM wrappers, which have none), or None when it has no margin."""
    if hasattr(estimator, "decision_function"):
        return estimator.decision_function
    if isinstance(estimator, BoosterModel) or not hasattr(estimator, "predict_proba"):
        return None
    runtime = native_runtime(estimator)
    return runtime.margin if runtime is not None else None


def check_wrapper_agrees(estimator: Any, encoded: np.ndarray) -> None:
    """An XGBoost or LightGBM scikit-learn wrapper's booster, called as Candor calls it for TreeSHAP and the
    margin, must give the wrapper's own raw scores on ``encoded`` reference rows; else a 422 (a wrapper
    setting Candor does not reproduce would make the explanation describe another model)."""
    runtime = native_runtime(estimator)
    if runtime is None or isinstance(estimator, BoosterModel):
        return
    if type(estimator).__module__.startswith("xgboost."):
        expected = estimator.predict(encoded, output_margin=True)
    else:
        expected = estimator.predict(encoded, raw_score=True)
    got = runtime.margin(encoded)
    expected = np.asarray(expected, dtype=float).reshape(np.shape(got))
    if not np.allclose(got, expected, rtol=1e-5, atol=1e-5, equal_nan=True):
        raise InvalidManifest.field(
            "artifact",
            "The wrapper's booster does not reproduce the wrapper's scores on the reference rows "
            "(a setting Candor does not read); save the booster itself with format xgboost or lightgbm.",
        )

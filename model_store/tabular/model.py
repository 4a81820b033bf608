"""A loaded tabular model version: validation, encoding, predictions and outputs in each space."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from model_store.cache import LoadedModelCache
from model_store.errors import InvalidInput
from model_store.manifest import Manifest
from model_store.tabular.fast_encoder import compile_encoder
from model_store.tabular.formats.boosters import (
    follow_threads,
    is_library_wrapper,
    margin_function,
    wrapper_predictions,
)
from model_store.tabular.instances import Columns, InstanceValidator
from model_store.tabular.structure import PipelineParts, dense, split_pipeline

Records = Sequence[dict[Any, Any]]
SPACES = ("probability", "log_odds", "raw")
VERIFY_ROWS = 200


class TabularModel:
    """One version of a scikit-learn estimator or Pipeline with its manifest and reference data."""

    flavour = "tabular"

    def __init__(self, manifest: Manifest, estimator: Any, reference: pd.DataFrame) -> None:
        self.manifest = manifest
        self.estimator = estimator
        names_in = getattr(estimator, "feature_names_in_", None)
        self.feature_order: list[str] = list(names_in) if names_in is not None else manifest.feature_names
        self.reference = self.frame(reference[self.feature_order].to_dict("records"))
        target = manifest.target
        self.reference_outcomes: list[str] | None = (
            reference[target].astype(str).tolist() if target and target in reference.columns else None
        )
        """The reference rows' true outcomes, when the reference data keeps the manifest's target column."""
        self.validator = InstanceValidator(manifest)
        self.parts: PipelineParts = split_pipeline(estimator, self.feature_order)
        self._fast_encode = None
        if self.parts.preprocessor is not None:
            self._fast_encode = compile_encoder(self.parts.preprocessor, self.reference.head(VERIFY_ROWS))
        self.classes: list[str] = list(manifest.classes or [])
        self.is_classifier = manifest.is_classification
        margin = margin_function(self.parts.estimator) if self.is_classifier else None
        self.margin: Callable[[np.ndarray], Any] | None = None if margin is None else self._threaded(margin)
        """The final estimator's margin (decision_function, or a booster's raw score), or None."""
        self._booster_predictions: Callable[[np.ndarray], np.ndarray] | None = None
        # the first reference rows encoded once, when a check needs them, and not kept after loading
        check = functools.cache(lambda: self.encode(self.reference.head(VERIFY_ROWS).to_dict("records")))
        self._booster_predictions = self._verified_booster_predictions(check)
        self._sigmoid_margin = self._probabilities_are_sigmoid_of_margin(check)
        self.derived: LoadedModelCache[Any] = LoadedModelCache(capacity=64)
        """Objects built once per loaded version (explainers, backgrounds), keyed by the builder."""

    @property
    def calls_are_round_trips(self) -> bool:
        """Whether each call of the model is a request to a predictor elsewhere (``format: remote``):
        explainers then evaluate many rows per call. Such a model reads the manifest's codes
        (``formats.codes``): its encoded matrix is the raw features, categories as their index."""
        return self.manifest.format == "remote"

    # -- inputs -------------------------------------------------------------------------------------------
    def validate(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        return self.validator.validate(self.validator.rows_from_lists(instances))

    def validate_columns(self, instances: Sequence[Any]) -> tuple[list[dict[str, Any]], Columns | None]:
        """``validate``, and the rows' values per feature when the check read them whole (else None)."""
        return self.validator.validate_columns(self.validator.rows_from_lists(instances))

    def frame(self, records: Records) -> pd.DataFrame:
        """Records as a DataFrame in the model's column order and dtypes."""
        df = pd.DataFrame.from_records(list(records), columns=self.feature_order)
        for spec in self.manifest.features:
            if spec.type == "numeric":
                df[spec.name] = df[spec.name].astype(float)
            elif spec.type == "boolean":
                df[spec.name] = df[spec.name].astype(bool)
            else:
                df[spec.name] = df[spec.name].astype(object)
        return df

    @property
    def has_fast_encoder(self) -> bool:
        return self._fast_encode is not None

    def encode(self, records: Records, columns: Columns | None = None) -> np.ndarray:
        """The matrix the final estimator reads (``columns``: the records' values per feature, if known)."""
        if self._fast_encode is not None:
            return self._fast_encode(records, columns)
        return self._transform(self.frame(records))

    def _transform(self, frame: pd.DataFrame) -> np.ndarray:
        """scikit-learn's own preprocessing of a frame (the reference path of ``encode``)."""
        if self.parts.preprocessor is None:
            return frame.to_numpy(dtype=float)
        return dense(self.parts.preprocessor.transform(frame))

    # -- outputs ------------------------------------------------------------------------------------------
    def class_index(self, label: str) -> int:
        try:
            return self.classes.index(label)
        except ValueError:
            raise InvalidInput.field(
                "target", f"Unknown class; classes are {', '.join(self.classes)}."
            ) from None

    def _threaded(self, call: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], Any]:
        def on_booster_threads(matrix: np.ndarray) -> Any:
            follow_threads(self.parts.estimator)
            return call(matrix)

        return on_booster_threads

    def _verified_booster_predictions(
        self, check: Callable[[], np.ndarray]
    ) -> Callable[[np.ndarray], np.ndarray] | None:
        """An XGBoost wrapper's predictions through its booster, if they equal the wrapper's own on the
        encoded reference rows ``check()``."""
        if not is_library_wrapper(self.parts.estimator):
            return None
        return wrapper_predictions(self.parts.estimator, check())

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Probabilities (n, classes) for classifiers, values (n, 1) for regressors."""
        if self._booster_predictions is not None:
            return self._booster_predictions(encoded)
        follow_threads(self.parts.estimator)
        if self.is_classifier:
            return np.asarray(self.parts.estimator.predict_proba(encoded), dtype=float)
        return np.asarray(self.parts.estimator.predict(encoded), dtype=float).reshape(-1, 1)

    def resolve_space(self, space: str) -> str:
        """The concrete name of an output space for this model (``raw`` of a binary margin is log-odds)."""
        if not self.is_classifier:
            if space != "raw":
                raise InvalidInput.field("output", "Regression models only have the raw output space.")
            return "raw"
        if space == "log_odds" and len(self.classes) != 2:
            raise InvalidInput.field(
                "output", "log_odds is defined for binary models; use raw or probability."
            )
        if space == "raw":
            if self.margin is None:
                return "probability"
            return "log_odds" if len(self.classes) == 2 else "raw"
        return space

    def output_matrix(self, space: str, encoded: np.ndarray) -> np.ndarray:
        """The model's output in a resolved space, one column per class (one column for regressors)."""
        if space == "probability" or not self.is_classifier:
            return self.predict_encoded(encoded)
        if self.margin is not None:
            margin = np.asarray(self.margin(encoded), dtype=float)
        else:
            proba = np.clip(self.predict_encoded(encoded)[:, 1], 1e-12, 1 - 1e-12)
            margin = np.log(proba / (1 - proba))
        if margin.ndim == 1:
            return np.column_stack([-margin, margin])
        return margin

    def _probabilities_are_sigmoid_of_margin(self, check: Callable[[], np.ndarray]) -> bool:
        """True when P(class 1) equals sigmoid(decision_function) on reference rows (GBC, HGB, logistic)."""
        if len(self.classes) != 2 or self.margin is None:
            return False
        encoded = check()
        margin = np.asarray(self.margin(encoded), dtype=float)
        return margin.ndim == 1 and bool(
            np.allclose(expit(margin), self.predict_encoded(encoded)[:, 1], rtol=0, atol=1e-12)
        )

    def outputs_and_probabilities(self, space: str, encoded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``output_matrix(space)`` and the class probabilities, walking the model once when the
        probabilities are (verifiably) the sigmoid of the log-odds margin."""
        if space == "log_odds" and self._sigmoid_margin and self.margin is not None:
            margin = np.asarray(self.margin(encoded), dtype=float)
            positive = expit(margin)
            return np.column_stack([-margin, margin]), np.column_stack([1 - positive, positive])
        return self.output_matrix(space, encoded), self.predict_encoded(encoded)

    def output_from_frame(self, space: str, frame: pd.DataFrame) -> np.ndarray:
        """Same as ``output_matrix`` from raw rows (used by model-agnostic explainers)."""
        return self.output_matrix(space, self._transform(frame))

    def predictions(self, records: Records) -> list[dict[str, Any]]:
        """Label and class probabilities per row (or the predicted value for regressors)."""
        outputs = self.predict_encoded(self.encode(records))
        return self.describe_predictions(outputs)

    def describe_predictions(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        if not self.is_classifier:
            return [{"value": v} for v in outputs[:, 0].tolist()]
        labels = np.asarray(self.classes, dtype=object)[outputs.argmax(axis=1)].tolist()
        return [
            {"label": label, "probabilities": dict(zip(self.classes, row, strict=True))}
            for label, row in zip(labels, outputs.tolist(), strict=True)
        ]

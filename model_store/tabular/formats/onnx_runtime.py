"""The onnxruntime side of an ONNX model: one session (CPU provider, fixed threads), the feeds that turn
the coded matrix into the graph's inputs, and the scikit-learn-like adapters (``OnnxClassifier``,
``OnnxRegressor``) that end the manifest's encoding Pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnxruntime as ort
from sklearn.base import ClassifierMixin, RegressorMixin

from model_store.errors import ExplainerFailed, InvalidManifest
from model_store.tabular.formats.base import LoadedEstimator
from model_store.tabular.formats.onnx_checks import refuse
from model_store.tabular.formats.probabilities import not_probabilities

PROVIDER = "CPUExecutionProvider"


class OnnxSession:
    """One onnxruntime session over checked bytes: shared by copies (a session is thread-safe to run) and
    rebuilt from the bytes when pickled."""

    def __init__(self, artifact: bytes) -> None:
        self.artifact = artifact
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(artifact, sess_options=options, providers=[PROVIDER])
        except Exception as exc:  # onnxruntime raises its own untyped errors for any graph it cannot run
            raise refuse("onnxruntime cannot load this model") from exc
        if self.session.get_providers() != [PROVIDER]:
            raise refuse("the model would run outside onnxruntime's CPU provider")

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[Any]:
        try:
            return list(self.session.run(outputs, feeds))
        except Exception as exc:  # a graph that fails on validated rows (a shape or type clash inside it)
            raise ExplainerFailed("The ONNX model failed on these rows.") from exc

    def __reduce__(self) -> tuple[Any, ...]:
        return (OnnxSession, (self.artifact,))

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxSession:
        return self


@dataclasses.dataclass(frozen=True)
class Column:
    """One graph input fed from one coded column."""

    input: str
    index: int
    dtype: Any
    rank: int
    categories: np.ndarray | None = None

    def tensor(self, coded: np.ndarray) -> np.ndarray:
        column = coded[:, self.index]
        if self.categories is not None:
            values = self.categories[np.rint(column).astype(int)]
        elif self.dtype is np.bool_:
            values = column > 0.5
        elif self.dtype is np.int64:
            values = np.rint(column).astype(np.int64)
        else:
            values = column.astype(self.dtype)
        return values.reshape(-1, 1) if self.rank == 2 else values


@dataclasses.dataclass(frozen=True)
class Feeds:
    """How the coded matrix becomes the graph's inputs: one matrix input, or one input per feature."""

    matrix: tuple[str, Any] | None
    columns: tuple[Column, ...] = ()

    def __call__(self, coded: np.ndarray) -> dict[str, np.ndarray]:
        coded = np.asarray(coded, dtype=float)
        if self.matrix is not None:
            name, dtype = self.matrix
            return {name: np.ascontiguousarray(coded, dtype=dtype)}
        return {column.input: column.tensor(coded) for column in self.columns}


class OnnxModel(LoadedEstimator):
    """The graph behind the coded matrix."""

    def __init__(self, session: OnnxSession, feeds: Feeds, n_features: int) -> None:
        self.session = session
        self.feeds = feeds
        self.n_features = n_features

    @property
    def n_features_in_(self) -> int:
        return self.n_features

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_features={self.n_features})"


class OnnxRegressor(RegressorMixin, OnnxModel):
    def __init__(self, session: OnnxSession, feeds: Feeds, n_features: int, output: str) -> None:
        super().__init__(session, feeds, n_features)
        self.output = output

    def predict(self, X: Any) -> np.ndarray:
        (values,) = self.session.run([self.output], self.feeds(X))
        values = np.asarray(values, dtype=float)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.shape != (len(X),):
            raise InvalidManifest.field("task", "The ONNX graph's output is not one value per row.")
        return values


class OnnxClassifier(ClassifierMixin, OnnxModel):
    def __init__(
        self,
        session: OnnxSession,
        feeds: Feeds,
        n_features: int,
        labels: Sequence[Any],
        output: str,
        label_output: str | None = None,
        verify: bool = False,
        declared: bool = True,
    ) -> None:
        super().__init__(session, feeds, n_features)
        self.labels = labels
        self.output = output
        self.label_output = label_output
        self.verify = verify
        """Check the graph's label output against ``labels`` (set for an upload, at registration)."""
        self.declared = declared
        """The labels are the graph's own (else the manifest's, and a label output may be class positions)."""

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)

    def predict_proba(self, X: Any) -> np.ndarray:
        wanted = [self.output] + ([self.label_output] if self.verify and self.label_output else [])
        answers = self.session.run(wanted, self.feeds(X))
        proba = self._matrix(answers[0])
        if proba.shape != (len(X), len(self.labels)):
            raise InvalidManifest.field(
                "classes",
                f"The ONNX graph gives {proba.shape[-1]} probabilities per row; the manifest has "
                f"{len(self.labels)} classes.",
            )
        if len(answers) == 2:
            self._check_labels(np.asarray(answers[1]).reshape(-1), proba)
        why = not_probabilities(proba) if self.verify else None
        if why is not None:
            raise InvalidManifest.field("artifact", f"The ONNX graph's {self.output} output has {why}.")
        return proba

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def _matrix(self, answer: Any) -> np.ndarray:
        if isinstance(answer, list):  # ZipMap: one {label: probability} per row
            return np.asarray([[row[label] for label in self.labels] for row in answer], dtype=float)
        return np.asarray(answer, dtype=float)

    def _check_labels(self, labels: np.ndarray, proba: np.ndarray) -> None:
        """At registration: the graph's own label output agrees with the classes read from its probabilities
        (rows whose top two probabilities tie are skipped); a graph that declares no labels may answer the
        class positions."""
        ordered = np.sort(proba, axis=1)
        clear = ordered[:, -1] - ordered[:, -2] > 1e-6 if proba.shape[1] > 1 else np.ones(len(proba), bool)
        top = proba.argmax(axis=1)
        expected = np.asarray([str(c) for c in self.labels], dtype=object)[top]
        got = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in labels], dtype=object)
        agree = got == expected
        if not self.declared:
            agree |= got == top.astype(str).astype(object)
        if not agree[clear].all():
            raise InvalidManifest.field(
                "classes",
                f"The ONNX graph's labels on the reference rows do not match the classes "
                f"{[str(c) for c in self.labels]} in this order.",
            )

"""Rows as matrices and back, scoring candidates with the registered model, and distances between rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from typing import Any, TypeVar

import numpy as np

from explainers.counterfactuals.space import SearchSpace
from model_store.tabular import TabularModel


class RowCodec:
    """``{feature: value}`` records <-> float matrices (categories as indices, booleans as 0/1)."""

    def __init__(self, space: SearchSpace) -> None:
        self.order = space.order
        self.kinds = [b.kind for b in space.bounds]
        self.categories = [list(spec.categories or []) for spec in space.specs]
        self.index = [{c: i for i, c in enumerate(cats)} for cats in self.categories]
        self.whole = [
            b.kind == "numeric" and b.step is not None and float(b.step).is_integer() for b in space.bounds
        ]

    def to_matrix(self, records: Sequence[dict[str, Any]]) -> np.ndarray:
        matrix = np.empty((len(records), len(self.order)))
        for j, (name, kind) in enumerate(zip(self.order, self.kinds, strict=True)):
            if kind == "categorical":
                lookup = self.index[j]
                matrix[:, j] = [lookup[r[name]] for r in records]
            else:
                matrix[:, j] = [float(r[name]) for r in records]
        return matrix

    def value(self, j: int, x: float) -> Any:
        """The JSON value of feature ``j`` for matrix entry ``x``."""
        kind = self.kinds[j]
        if kind == "categorical":
            return self.categories[j][int(x)]
        if kind == "boolean":
            return bool(x)
        return int(x) if self.whole[j] and float(x).is_integer() else float(x)

    def to_records(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        columns = [[self.value(j, x) for x in matrix[:, j].tolist()] for j in range(len(self.order))]
        return [dict(zip(self.order, values, strict=True)) for values in zip(*columns, strict=True)]

    def model_records(self, matrix: np.ndarray) -> list[dict[str, Any]]:
        """Records as the model's encoder reads them (numbers as floats)."""
        columns: list[list[Any]] = []
        for j, kind in enumerate(self.kinds):
            column = matrix[:, j]
            if kind == "categorical":
                cats = self.categories[j]
                columns.append([cats[int(i)] for i in column.tolist()])
            elif kind == "boolean":
                columns.append([bool(v) for v in column.tolist()])
            else:
                columns.append(column.tolist())
        return [dict(zip(self.order, values, strict=True)) for values in zip(*columns, strict=True)]


@dataclasses.dataclass(frozen=True)
class Desired:
    """The outcome a counterfactual must reach: a class index, or a value range for regressors."""

    label: str | None = None
    index: int | None = None
    low: float | None = None
    high: float | None = None

    def reached(self, outputs: np.ndarray) -> np.ndarray:
        if self.index is not None:
            return np.asarray(outputs.argmax(axis=1) == self.index)
        values = outputs[:, 0]
        return np.asarray((values >= self.low) & (values <= self.high))

    def describe(self) -> dict[str, Any]:
        if self.index is not None:
            return {"class": self.label}
        return {"range": [self.low, self.high]}


T = TypeVar("T")
Scoring = Generator[np.ndarray, np.ndarray, T]
"""A search step by step: it yields each matrix it needs scored and is sent back the model's outputs for it,
so the driver (``Scorer.run``) can score the matrices of many rows' searches in one call of the model."""


class Scorer:
    """Re-scores candidate matrices with the registered model (never with a search library's own scores)."""

    def __init__(self, model: TabularModel, codec: RowCodec, desired: Desired) -> None:
        self.model = model
        self.codec = codec
        self.desired = desired
        self.rows_scored = 0

    def outputs(self, matrix: np.ndarray) -> np.ndarray:
        """Class probabilities (or the value for regressors) per row."""
        if len(matrix) == 0:
            width = len(self.model.classes) if self.model.is_classifier else 1
            return np.empty((0, width))
        self.rows_scored += len(matrix)
        if self.model.calls_are_round_trips:  # a remote model reads the manifest's codes: this matrix
            return self.model.predict_encoded(matrix)
        return self.model.predict_encoded(self.model.encode(self.codec.model_records(matrix)))

    def valid(self, matrix: np.ndarray) -> np.ndarray:
        return self.desired.reached(self.outputs(matrix))

    def score(self, matrix: np.ndarray) -> Scoring[np.ndarray]:
        """``outputs(matrix)`` as a step: yields the matrix to the driver (nothing for no rows)."""
        if len(matrix) == 0:
            return self.outputs(matrix)
        outputs = yield matrix
        return outputs

    def score_valid(self, matrix: np.ndarray) -> Scoring[np.ndarray]:
        """``valid(matrix)`` as a step."""
        return self.desired.reached((yield from self.score(matrix)))

    def run(self, searches: list[Scoring[T]], together: bool) -> tuple[list[T], list[int]]:
        """Each search's result and the rows it had scored: one after another, or ``together`` (each call
        of the model scores what every unfinished search needs next: one request per round for a remote
        model, not one per row)."""
        results: list[Any] = [None] * len(searches)
        counts = [0] * len(searches)
        for group in [list(range(len(searches)))] if together else [[i] for i in range(len(searches))]:
            pending: dict[int, np.ndarray] = {}
            for i in group:
                self._advance(searches, i, None, pending, results)
            while pending:
                order = list(pending)
                matrices = [pending[i] for i in order]
                outputs = self.outputs(np.vstack(matrices))
                start = 0
                for i, matrix in zip(order, matrices, strict=True):
                    counts[i] += len(matrix)
                    part, start = outputs[start : start + len(matrix)], start + len(matrix)
                    self._advance(searches, i, part, pending, results)
        return results, counts

    @staticmethod
    def _advance(
        searches: list[Scoring[Any]],
        i: int,
        sent: np.ndarray | None,
        pending: dict[int, np.ndarray],
        results: list[Any],
    ) -> None:
        try:
            pending[i] = searches[i].send(sent)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[i] = stop.value
            pending.pop(i, None)


class Distance:
    """Per-feature distance averaged over features: |change| / MAD for numbers, 0/1 for categories."""

    def __init__(self, model: TabularModel, space: SearchSpace) -> None:
        scales = np.ones(len(space.order))
        self.numeric = np.array([b.kind == "numeric" for b in space.bounds])
        for j, bound in enumerate(space.bounds):
            if bound.kind == "numeric":
                column = model.reference[bound.name].to_numpy(dtype=float)
                mad = float(np.median(np.abs(column - np.median(column))))
                scale = mad if mad > 0 else float(np.std(column))
                scales[j] = scale if scale > 0 else 1.0
        self.scales = scales

    def per_feature(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        diff = np.abs(a - b)
        return np.where(self.numeric, diff / self.scales, (diff > 0).astype(float))

    def to_row(self, row: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.asarray(self.per_feature(candidates, row[None, :]).mean(axis=1))

    def pairwise(self, candidates: np.ndarray) -> np.ndarray:
        return np.asarray(self.per_feature(candidates[:, None, :], candidates[None, :, :]).mean(axis=2))

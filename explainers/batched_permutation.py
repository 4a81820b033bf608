"""shap's permutation explainer (``shap.PermutationExplainer`` with an Independent masker and the identity
link, no main effects) with the distinct masked rows of many permutations and instances evaluated in a few
large calls of the model, for models where each call is a round trip (a remote predictor). shap evaluates one
permutation per call (``max_evals / (2 k + 1)`` calls per instance).

Each row's permutations are drawn as shap draws a one-row request's (NumPy's legacy generator seeded with
``seed``, one in-place shuffle of the varying features per permutation), so a one-row request's
attributions equal shap's up to floating-point summation order. shap draws the rows of a longer request
from one generator in turn; here every row gets what it alone gets, so a job computes a chunk in one call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pandas as pd

MAX_ROWS_PER_CALL = 100_000
"""Distinct masked rows evaluated per call of the model (more instances are split into more calls)."""

Predict = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class _Plan:
    row: np.ndarray
    varying: np.ndarray
    permutations: list[np.ndarray]

    @property
    def states(self) -> int:
        return max(1, len(self.permutations) * (2 * len(self.varying) + 1))


def permutation_shap(
    predict: Predict, rows: np.ndarray, background: np.ndarray, max_evals: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Attributions (rows, features, outputs) and base values (rows, outputs), as shap computes them."""
    plans = [_plan(row, background, max_evals, np.random.RandomState(seed)) for row in rows]
    means = _evaluate(predict, plans, background)
    values, base = [], []
    for plan, outputs in zip(plans, means, strict=True):
        row_values, expected = _attributions(plan, outputs, rows.shape[1])
        values.append(row_values)
        base.append(expected)
    return np.stack(values), np.stack(base)


def _plan(row: np.ndarray, background: np.ndarray, max_evals: int, generator: np.random.RandomState) -> _Plan:
    varying = np.where(np.any(~np.isclose(row, background), axis=0))[0]
    if len(varying) == 0:
        return _Plan(row, varying, [])
    count = max_evals // (2 * len(varying) + 1)
    if count == 0:
        raise ValueError(f"max_evals={max_evals} is below 2 * varying features + 1.")
    permutations = []
    for _ in range(count):
        generator.shuffle(varying)
        permutations.append(varying.copy())
    return _Plan(row, varying, permutations)


def _masks(plan: _Plan, n_features: int) -> np.ndarray:
    """Which features take the row's value in each evaluated state: per permutation, none, then the
    permutation's features switched on one by one, then off one by one in the same order."""
    k = len(plan.varying)
    if k == 0:
        return np.zeros((1, n_features), dtype=bool)
    masks = np.zeros((len(plan.permutations), 2 * k + 1, n_features), dtype=bool)
    for index, permutation in enumerate(plan.permutations):
        for position, feature in enumerate(permutation):
            masks[index, position + 1 : k + position + 1, feature] = True
    return masks.reshape(-1, n_features)


def _evaluate(predict: Predict, plans: list[_Plan], background: np.ndarray) -> list[np.ndarray]:
    """Per plan, the model's mean output over the background in each state, (states, outputs): each plan's
    distinct masked rows, as many plans' together per call as ``MAX_ROWS_PER_CALL`` allows."""
    n_background, n_features = background.shape
    distinct = []
    for plan in plans:
        masks = _masks(plan, n_features)
        masked = np.where(masks[:, None, :], plan.row[None, None, :], background[None, :, :])
        distinct.append(_unique_rows(masked.reshape(-1, n_features)))
    out: list[np.ndarray] = []
    start = 0
    while start < len(plans):
        end, rows = start + 1, len(distinct[start][0])
        while end < len(plans) and rows + len(distinct[end][0]) <= MAX_ROWS_PER_CALL:
            rows += len(distinct[end][0])
            end += 1
        outputs = np.asarray(
            predict(np.concatenate([unique for unique, _ in distinct[start:end]])), dtype=float
        )
        offset = 0
        for plan, (unique, inverse) in zip(plans[start:end], distinct[start:end], strict=True):
            mine = outputs[offset : offset + len(unique)][inverse]
            out.append(mine.reshape(plan.states, n_background, -1).mean(axis=1))
            offset += len(unique)
        start = end
    return out


def _unique_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct row once, and where each row is among them (most masked rows repeat: a feature switched
    on where a background row already has the instance's value, or the same few features left off)."""
    frame = pd.DataFrame(matrix)
    inverse = frame.groupby(list(frame.columns), sort=False, dropna=False).ngroup().to_numpy()
    _, first = np.unique(inverse, return_index=True)
    return matrix[first], inverse


def _attributions(plan: _Plan, outputs: np.ndarray, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    values = np.zeros((n_features, outputs.shape[1]))
    k = len(plan.varying)
    if k == 0:
        return values, outputs[0]
    per_permutation = outputs.reshape(len(plan.permutations), 2 * k + 1, -1)
    for permutation, states in zip(plan.permutations, per_permutation, strict=True):
        values[permutation] += states[1 : k + 1] - states[:k]  # switched on
        values[permutation] += states[k : 2 * k] - states[k + 1 :]  # switched off
    return values / (2 * len(plan.permutations)), per_permutation[-1][0]

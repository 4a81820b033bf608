"""The batched permutation SHAP of remote models (``explainers/batched_permutation.py``) against shap's own
``PermutationExplainer`` on the same model, background, seed and budget: equal for one row, and each row of a
longer request equal to that row alone; the model is called a few times, not once per permutation."""

from __future__ import annotations

import numpy as np
import pytest
import shap

from explainers.batched_permutation import permutation_shap


def model(matrix: np.ndarray) -> np.ndarray:
    """Two outputs with interactions; the last two columns are small-integer "categories"."""
    score = np.tanh(matrix[:, 0] * matrix[:, 1] - matrix[:, 2]) + 0.3 * (matrix[:, 3] == 2) * matrix[:, 4]
    return np.column_stack([score, np.sin(matrix[:, 0]) + matrix[:, 3]])


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    numbers = rng.normal(size=(60, 3))
    codes = rng.integers(0, 3, size=(60, 2)).astype(float)
    matrix = np.hstack([numbers, codes])
    return matrix[:40], matrix[40:]


def shap_values(
    rows: np.ndarray, background: np.ndarray, max_evals: int, seed: int
) -> tuple[np.ndarray, ...]:
    masker = shap.maskers.Independent(background, max_samples=len(background))
    explained = shap.PermutationExplainer(model, masker, seed=seed)(rows, max_evals=max_evals, silent=True)
    return explained.values, explained.base_values


@pytest.mark.parametrize(("seed", "max_evals"), [(0, 11), (1, 64), (7, 200)])
def test_one_row_equals_shap(data: tuple[np.ndarray, np.ndarray], seed: int, max_evals: int) -> None:
    background, rows = data
    calls: list[int] = []

    def counted(matrix: np.ndarray) -> np.ndarray:
        calls.append(len(matrix))
        return model(matrix)

    for row in rows[:4]:
        calls.clear()
        values, base = permutation_shap(counted, row[None, :], background, max_evals, seed)
        expected_values, expected_base = shap_values(row[None, :], background, max_evals, seed)
        np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-12)
        np.testing.assert_allclose(base, expected_base, rtol=0, atol=1e-12)
        assert len(calls) == 1 and calls[0] <= (max_evals + 1) * len(background)


def test_each_row_of_a_request_is_what_it_alone_gets(data: tuple[np.ndarray, np.ndarray]) -> None:
    background, rows = data
    together, base = permutation_shap(model, rows, background, 64, 3)
    for index, row in enumerate(rows):
        alone, alone_base = permutation_shap(model, row[None, :], background, 64, 3)
        np.testing.assert_array_equal(together[index], alone[0])
        np.testing.assert_array_equal(base[index], alone_base[0])
    assert np.abs(together.sum(axis=1) + base - model(rows)).max() < 1e-12  # additivity


def test_a_row_equal_to_every_background_row_gets_zeros() -> None:
    row = np.zeros((1, 5))
    background = np.zeros((4, 5))
    values, base = permutation_shap(model, row, background, 20, 0)
    assert (values == 0).all()
    np.testing.assert_allclose(base[0], model(row)[0])

"""Row blocks on the booster threads (explainers/row_blocks.py): the tabulated TreeSHAP and the OOD forest's
scores of a large batch split over threads are bit for bit those of the batch computed whole."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import shap
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest

from explainers import row_blocks
from explainers.ood import ForestScorer
from explainers.path_table import PathTable
from model_store.tabular.formats.boosters import MIN_ROWS_PER_THREAD, booster_threads, set_booster_threads

ROWS = 3 * MIN_ROWS_PER_THREAD + 17


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = booster_threads()
    set_booster_threads(2)
    yield
    set_booster_threads(before)


def test_blocks_split_only_batches_large_enough_for_every_thread(two_threads: None) -> None:
    seen: list[int] = []

    def rows(block: np.ndarray) -> np.ndarray:
        seen.append(len(block))
        return block[:, 0] * 2

    matrix = np.arange(ROWS * 2, dtype=float).reshape(ROWS, 2)
    np.testing.assert_array_equal(row_blocks.by_row_blocks(rows, matrix), matrix[:, 0] * 2)
    assert sorted(seen) == [ROWS // 2, ROWS - ROWS // 2]
    seen.clear()
    row_blocks.by_row_blocks(rows, matrix[: 2 * MIN_ROWS_PER_THREAD - 1])
    assert seen == [2 * MIN_ROWS_PER_THREAD - 1], "too few rows for two blocks: one call"


def test_split_table_and_forest_equal_the_whole_batch(two_threads: None) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, size=(ROWS, 5)).astype(float)
    y = (x[:, 0] + x[:, 1] * (x[:, 2] > 3) > 6).astype(int)
    table = PathTable(
        shap.TreeExplainer(GradientBoostingClassifier(n_estimators=20, random_state=0).fit(x, y)).model
    )
    scorer = ForestScorer(IsolationForest(n_estimators=30, random_state=0).fit(x))
    split_values, split_scores = table.shap_values(x), row_blocks.by_row_blocks(scorer.score_samples, x)
    set_booster_threads(1)
    assert np.array_equal(split_values, table.shap_values(x))
    assert np.array_equal(split_scores, scorer.score_samples(x))

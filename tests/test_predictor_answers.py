"""A predictor's answers kept for one explanation: rows asked again are not sent again
(``model_store.predictors.answers``). ``ask`` stands for the predictor: it answers each row with its sum and
records what it was sent."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.predictors import answers
from model_store.predictors.answers import MAX_KEPT_ROWS, answered, keeping_answers, room_for_answers


class Predictor:
    def __init__(self) -> None:
        self.sent: list[np.ndarray] = []

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        self.sent.append(matrix.copy())
        return np.column_stack([matrix.sum(axis=1), -matrix.sum(axis=1)])


def test_outside_an_explanation_every_call_is_sent_whole() -> None:
    ask, rows = Predictor(), np.array([[1.0, 2.0], [1.0, 2.0]])
    assert room_for_answers() == 0
    answered("p", rows, ask)
    answered("p", rows, ask)
    assert [len(m) for m in ask.sent] == [2, 2]


def test_within_an_explanation_only_rows_not_answered_yet_are_sent_once() -> None:
    ask = Predictor()
    first = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
    second = np.array([[3.0, 4.0], [5.0, 6.0], [5.0, 6.0], [1.0, 2.0]])
    with keeping_answers():
        assert room_for_answers() == MAX_KEPT_ROWS
        got_first = answered("p", first, ask)
        assert room_for_answers() == MAX_KEPT_ROWS - 2
        got_second = answered("p", second, ask)
        assert answered("p", second, ask).tolist() == got_second.tolist()
    np.testing.assert_array_equal(ask.sent[0], [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(ask.sent[1], [[5.0, 6.0]])
    assert len(ask.sent) == 2
    assert got_first.tolist() == [[3.0, -3.0], [7.0, -7.0], [3.0, -3.0]]
    assert got_second.tolist() == [[7.0, -7.0], [11.0, -11.0], [11.0, -11.0], [3.0, -3.0]]
    answered("p", first, ask)  # the explanation is over: asked again
    assert len(ask.sent) == 3


def test_each_source_answers_for_itself() -> None:
    ask = Predictor()
    rows = np.array([[1.0, 2.0]])
    with keeping_answers():
        answered("one", rows, ask)
        answered("other", rows, ask)
    assert len(ask.sent) == 2


def test_past_the_bound_a_call_is_sent_whole_and_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(answers, "MAX_KEPT_ROWS", 3)
    ask = Predictor()
    with keeping_answers() as kept:
        answered("p", np.array([[1.0], [2.0]]), ask)
        answered("p", np.array([[1.0], [3.0], [4.0]]), ask)  # 2 kept + 2 new > 3
        assert len(kept.rows) == 2
        answered("p", np.array([[1.0], [3.0]]), ask)
    assert [len(m) for m in ask.sent] == [2, 3, 1]


def test_a_failed_request_keeps_nothing() -> None:
    def failing(matrix: np.ndarray) -> np.ndarray:
        raise RuntimeError("the predictor answered 503")

    ask = Predictor()
    with keeping_answers() as kept:
        with pytest.raises(RuntimeError):
            answered("p", np.array([[1.0]]), failing)
        assert kept.rows == {}
        answered("p", np.array([[1.0]]), ask)
    assert len(ask.sent) == 1

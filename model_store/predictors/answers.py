"""What a predictor answered in one explanation (``keeping_answers()``): a row asked again within it is
answered from what was kept, not sent again, and a row asked twice in one call is sent once. Within one
explanation a predictor is taken to answer a row the same way; its record states the requests actually sent.

Bounded: an explanation keeps at most ``MAX_KEPT_ROWS`` rows' answers; a call whose rows would pass the bound
is sent whole and not kept (permutation SHAP's tens of thousands of masked rows are distinct already).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Hashable, Iterator

import numpy as np

MAX_KEPT_ROWS = 20_000


class KeptAnswers:
    def __init__(self) -> None:
        self.rows: dict[tuple[Hashable, bytes], np.ndarray] = {}


_current: contextvars.ContextVar[KeptAnswers | None] = contextvars.ContextVar("kept_answers", default=None)


@contextlib.contextmanager
def keeping_answers() -> Iterator[KeptAnswers]:
    """Keep the predictors' answers for the length of this context (one explanation)."""
    kept = KeptAnswers()
    token = _current.set(kept)
    try:
        yield kept
    finally:
        _current.reset(token)


def room_for_answers() -> int:
    """How many more rows' answers this context can keep (0 when it keeps none): rows scored ahead of need
    save a later request only if they are kept."""
    kept = _current.get()
    return 0 if kept is None else max(0, MAX_KEPT_ROWS - len(kept.rows))


def answered(source: Hashable, matrix: np.ndarray, ask: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``ask(matrix)`` (one row of answer per row of ``matrix``), asking ``source`` only for the distinct rows
    it has not answered in this context."""
    kept = _current.get()
    if kept is None or len(matrix) == 0:
        return ask(matrix)
    rows = np.ascontiguousarray(matrix, dtype=float)
    keys = [(source, row.tobytes()) for row in rows]
    new = list(dict.fromkeys(k for k in keys if k not in kept.rows))
    if len(kept.rows) + len(new) > MAX_KEPT_ROWS:
        return ask(matrix)
    if new:
        position = {key: i for i, key in enumerate(keys)}
        answer = np.asarray(ask(rows[[position[key] for key in new]]))
        kept.rows.update(zip(new, answer, strict=True))
    return np.stack([kept.rows[key] for key in keys])

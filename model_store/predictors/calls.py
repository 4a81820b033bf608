"""How many requests the predictors answered: a Prometheus counter per endpoint and outcome, and a tally of
the requests made inside ``counting_calls()`` (one explanation's, in this thread or task)."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from prometheus_client import Counter

CALLS = Counter(
    "candor_predictor_requests_total",
    "HTTP requests sent to remote model predictors, by endpoint and outcome (ok, error, timeout, retried).",
    ["endpoint", "outcome"],
)


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        """Requests sent (every attempt, retries included)."""
        self.rows = 0
        """Rows the predictor answered."""
        self.seconds = 0.0
        """Time spent in requests answered (sending the body, the predictor's work, receiving)."""


_current: contextvars.ContextVar[tuple[Tally, ...]] = contextvars.ContextVar("predictor_tally", default=())


@contextlib.contextmanager
def counting_calls() -> Iterator[Tally]:
    """Count the predictor requests made in this context (each of nested tallies counts them)."""
    tally = Tally()
    token = _current.set((*_current.get(), tally))
    try:
        yield tally
    finally:
        _current.reset(token)


def record_retry(endpoint: str) -> None:
    CALLS.labels(endpoint, "retried").inc()


def record_call(endpoint: str, outcome: str, rows: int = 0, seconds: float = 0.0) -> None:
    """One request sent, answered ``ok`` (``rows`` rows), or failed (``error``, ``timeout``), after
    ``seconds``."""
    CALLS.labels(endpoint, outcome).inc()
    for tally in _current.get():
        tally.requests += 1
        tally.rows += rows
        tally.seconds += seconds

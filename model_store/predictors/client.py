"""One predictor endpoint's HTTP client: a keep-alive session, a timeout, bounded retries with a short backoff
(after connection errors and 5xx answers, never after a 4xx), and every failure translated at this boundary
into ``PredictorFailed`` (502) or ``PredictorTimeout`` (504) naming the endpoint, never its URL."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import orjson
import requests

from model_store.errors import PredictorFailed, PredictorTimeout
from model_store.manifest import PredictorSpec
from model_store.predictors.calls import record_call, record_retry
from model_store.predictors.endpoint import PredictorEndpoint
from model_store.predictors.protocols import PROTOCOLS, Batch, WrongAnswer

BACKOFF_SECONDS = 0.1
"""The wait before the first retry; doubled before each next one."""


class _Retry(Exception):
    def __init__(self, failure: PredictorFailed) -> None:
        super().__init__(failure.detail)
        self.failure = failure


class PredictorClient:
    """Sends rows to one remote model: one request per call, split only above the endpoint's max batch."""

    def __init__(self, spec: PredictorSpec, endpoint: PredictorEndpoint, output: str, width: int) -> None:
        self.spec = spec
        self.endpoint = endpoint
        self.output = output
        self.width = width
        """Numbers per row in the answer: the classes, or 1 for a regressor."""
        self.protocol = PROTOCOLS[spec.protocol]
        self.url = endpoint.url + self.protocol.path(spec)
        self._local = threading.local()

    def __repr__(self) -> str:
        return (
            f"PredictorClient({self.spec.protocol}, endpoint={self.endpoint.name}, model={self.spec.model})"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _local=threading.local())

    @property
    def session(self) -> requests.Session:
        """This thread's keep-alive session."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["Content-Type"] = "application/json"
            if self.endpoint.authorization:
                session.headers["Authorization"] = self.endpoint.authorization
        return session

    def infer(self, batch: Batch) -> np.ndarray:
        """The answer for every row, shaped (rows, width)."""
        size = self.endpoint.max_batch
        if batch.rows <= size:
            return self._infer_one(batch)
        parts = []
        for start in range(0, batch.rows, size):
            columns = [column[start : start + size] for column in batch.columns]
            part = Batch(batch.names, columns, batch.datatypes, len(columns[0]))
            parts.append(self._infer_one(part))
        return np.vstack(parts)

    def _infer_one(self, batch: Batch) -> np.ndarray:
        body = orjson.dumps(self.protocol.body(batch, self.spec, self.output))
        payload = self._post(body, batch.rows)
        try:
            return self.protocol.answer(payload, self.spec, self.output, batch.rows, self.width)
        except WrongAnswer as exc:
            raise self.failed(f"answered the wrong shape: {exc}") from None

    def _post(self, body: bytes, rows: int) -> Any:
        attempts = self.endpoint.retries + 1
        for attempt in range(attempts):
            try:
                return self._attempt(body, rows)
            except _Retry as retry:
                if attempt + 1 == attempts:
                    raise retry.failure from None
                record_retry(self.endpoint.name)
                time.sleep(BACKOFF_SECONDS * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, body: bytes, rows: int) -> Any:
        name = self.endpoint.name
        started = time.perf_counter()
        try:
            response = self.session.post(self.url, data=body, timeout=self.endpoint.timeout)
        except requests.ConnectionError as exc:
            if isinstance(exc, requests.ConnectTimeout):
                record_call(name, "timeout")
                raise _Retry(self._timed_out()) from None
            record_call(name, "error")
            raise _Retry(self.failed("could not be reached")) from None
        except requests.Timeout:
            record_call(name, "timeout")
            raise self._timed_out() from None
        except requests.RequestException:
            record_call(name, "error")
            raise self.failed("could not be asked") from None
        if response.status_code >= 500:
            record_call(name, "error")
            raise _Retry(self.failed(f"answered {response.status_code}"))
        if response.status_code != 200:
            record_call(name, "error")
            raise self.failed(f"answered {response.status_code}")
        record_call(name, "ok", rows, time.perf_counter() - started)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.failed("answered something that is not JSON") from None

    def failed(self, what: str) -> PredictorFailed:
        """A 502 naming this endpoint and its model (``what``: what the predictor did)."""
        return PredictorFailed(f"The predictor {self.endpoint.name} ({self.spec.model}) {what}.")

    def _timed_out(self) -> PredictorTimeout:
        seconds = self.endpoint.timeout
        return PredictorTimeout(
            f"The predictor {self.endpoint.name} ({self.spec.model}) did not answer in {seconds:g} s."
        )

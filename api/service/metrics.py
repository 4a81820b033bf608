"""Prometheus series recorded by the service, the adapters and the HTTP hooks (no Flask here: Dask workers and
the job runner import this module). ``api.http.v1.metrics`` serves them at ``GET /v1/metrics``.

Series (labels are bounded: ``route`` is the URL rule template or ``unmatched``, never the raw path):

- ``candor_http_requests_total{route,method,status}``
- ``candor_http_request_duration_seconds{route,method}``
- ``candor_explanation_seconds{method}``: explanation compute time (``ExplanationService.compute``)
- ``candor_model_load_seconds{flavour}``: loads from disk (``model_store.registry``)
- ``candor_model_cache_total{result}``: hits and misses of the registry's loaded-model cache
- ``candor_job_queue_depth``: jobs waiting to run, counted in the database at scrape time
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from api.service.metrics_fold import FoldAwareCollector
from model_store.jobs import queued_count

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("candor.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

HTTP_REQUESTS = Counter(
    "candor_http_requests_total", "HTTP requests answered.", ["route", "method", "status"]
)
HTTP_DURATION = Histogram(
    "candor_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response is handed to the server).",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
EXPLANATION_SECONDS = Histogram(
    "candor_explanation_seconds",
    "Time to compute an explanation, by method (model loading excluded).",
    ["method"],
    buckets=LATENCY_BUCKETS,
)


class JobQueueCollector:
    """``candor_job_queue_depth``, read from the database when scraped (the same answer from every worker);
    left out of the scrape when the database does not answer."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("candor_job_queue_depth", "Jobs queued, waiting for a runner.")]

    def collect(self) -> Iterator[Metric]:
        try:
            depth = queued_count(self.sessions)
        except SQLAlchemyError:
            log.warning("job queue depth unavailable: the database did not answer", exc_info=True)
            return
        yield GaugeMetricFamily("candor_job_queue_depth", "Jobs queued, waiting for a runner.", value=depth)


class _ProcessRegistry:
    """The process's default registry, as one collector of a scrape registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def scrape_registry(sessions: sessionmaker[Session]) -> CollectorRegistry:
    """What a scrape serves: every worker's samples (multiprocess mode) or this process's, plus the queue."""
    registry = CollectorRegistry(auto_describe=False)
    if directory := os.environ.get(MULTIPROC_ENV):
        FoldAwareCollector(registry, directory)
    else:
        registry.register(_ProcessRegistry())
    registry.register(JobQueueCollector(sessions))
    return registry

"""Prometheus metrics at ``GET /v1/metrics`` (text format, ``admin`` scope) and the hook that counts requests.
The series themselves are declared in ``api.metrics`` (no Flask), the queue depth here at scrape time.

Under gunicorn, ``api/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
prometheus_client: every worker writes its samples to files there and a scrape, whichever worker answers it,
aggregates all of them. Without it (tests, the CLI) the process's own registry is served.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator

from flask import Flask, Response, current_app
from flask.views import MethodView
from flask_smorest import Api
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from api import observability
from api.metrics import HTTP_DURATION, HTTP_REQUESTS
from api.metrics_fold import FoldAwareCollector
from api.v1.blueprint import Blueprint
from model_store.jobs import QUEUED
from model_store.tables import JobRow

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
EXTENSION = "candor.metrics"
log = logging.getLogger("candor.metrics")
blp = Blueprint("metrics", __name__, url_prefix="/v1", description="Prometheus metrics")


def queued_jobs(sessions: sessionmaker[Session]) -> int:
    """Jobs waiting for a runner."""
    with sessions() as session:
        return int(
            session.scalar(select(func.count()).select_from(JobRow).where(JobRow.status == QUEUED)) or 0
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
            depth = queued_jobs(self.sessions)
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


@blp.route("/metrics")
class Metrics(MethodView):
    required_scope = "admin"

    @blp.response(
        200,
        {"type": "string"},
        description="Metrics in the Prometheus text exposition format (0.0.4).",
        content_type="text/plain",
    )
    def get(self):  # type: ignore[no-untyped-def]
        """Prometheus metrics: requests, latencies, explanation and model load times, cache, job queue."""
        registry: CollectorRegistry = current_app.extensions[EXTENSION]
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def init_app(app: Flask, api: Api, sessions: sessionmaker[Session]) -> None:
    """Register ``/v1/metrics`` and count every request (after ``observability.init_app``)."""
    app.extensions[EXTENSION] = scrape_registry(sessions)
    api.register_blueprint(blp)

    @app.after_request
    def _count(response: Response) -> Response:
        route, method = observability.route_label(), observability.method_label()
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        HTTP_DURATION.labels(route, method).observe(observability.elapsed_seconds())
        return response

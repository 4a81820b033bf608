"""Prometheus metrics at ``GET /v1/metrics`` (text format, ``admin`` scope) and the hook that counts requests.
The series themselves and what a scrape serves are declared in ``api.service.metrics`` (no Flask).

Under gunicorn, ``api/ops/gunicorn_conf.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker imports
prometheus_client: every worker writes its samples to files there and a scrape, whichever worker answers it,
aggregates all of them. Without it (tests, the CLI) the process's own registry is served.
"""

from __future__ import annotations

from flask import Flask, Response, current_app
from flask.views import MethodView
from flask_smorest import Api
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest

from api.http import observability
from api.http.v1.blueprint import Blueprint
from api.service.metrics import HTTP_DURATION, HTTP_REQUESTS

EXTENSION = "candor.metrics"
blp = Blueprint("metrics", __name__, url_prefix="/v1", description="Prometheus metrics")


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


def init_app(app: Flask, api: Api, registry: CollectorRegistry) -> None:
    """Register ``/v1/metrics`` serving ``registry`` (``api.service.metrics.scrape_registry``) and count every
    request (after ``observability.init_app``)."""
    app.extensions[EXTENSION] = registry
    api.register_blueprint(blp)

    @app.after_request
    def _count(response: Response) -> Response:
        route, method = observability.route_label(), observability.method_label()
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        HTTP_DURATION.labels(route, method).observe(observability.elapsed_seconds())
        return response

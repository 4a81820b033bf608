"""Prometheus series recorded by the service, the adapters and the HTTP hooks (no Flask here: Dask workers and
the job runner import this module). ``api.v1.metrics`` serves them at ``GET /v1/metrics``.

Series (labels are bounded: ``route`` is the URL rule template or ``unmatched``, never the raw path):

- ``candor_http_requests_total{route,method,status}``
- ``candor_http_request_duration_seconds{route,method}``
- ``candor_explanation_seconds{method}``: explanation compute time (``ExplanationService.compute``)
- ``candor_model_load_seconds{flavour}``: loads from disk (``model_store.registry``)
- ``candor_model_cache_total{result}``: hits and misses of the registry's loaded-model cache
- ``candor_job_queue_depth``: jobs waiting to run, counted in the database at scrape time
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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

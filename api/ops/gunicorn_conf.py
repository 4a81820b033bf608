"""gunicorn settings for Candor (``candor serve`` passes this file with ``-c``); CANDOR_* variables apply.

Metrics: every worker writes its Prometheus samples under ``<data_dir>/metrics`` (prometheus-client's
multiprocess mode, chosen by ``PROMETHEUS_MULTIPROC_DIR``, set here in the master before any worker imports
prometheus_client); the master empties it at start-up and folds each dead worker's files into archive files
(``api/service/metrics_fold.py``), and a scrape aggregates every file.
Access lines come from the app (JSON, with the request id), so gunicorn's own access log is off.
"""

import functools
import os
from pathlib import Path

# Before anything imports prometheus_client (importing ``api`` does): it picks its mode once, at import.
METRICS_DIR = (Path(os.environ.get("CANDOR_DATA_DIR") or "./var") / "metrics").resolve()
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)

from api.ops.gunicorn_worker import request_line_limit  # noqa: E402
from api.settings import Settings  # noqa: E402

_settings = Settings.load()
if (_settings.data_dir / "metrics").resolve() != METRICS_DIR:
    raise RuntimeError(f"metrics dir {METRICS_DIR} is not under the data dir {_settings.data_dir}")

bind = _settings.bind
workers = _settings.workers
threads = _settings.threads
worker_class = "api.ops.gunicorn_worker.ProblemWorker"  # gthread; refusals before the app as problem+json
limit_request_line = request_line_limit(_settings.max_request_line)
timeout = _settings.timeout
graceful_timeout = 30
keepalive = 5
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests // 10
accesslog = None
errorlog = "-"
loglevel = _settings.log_level
wsgi_app = "api.ops.wsgi:app"
control_socket_disable = True  # no shared control socket in $HOME; manage with signals


@functools.cache
def _serving_marks(master_pid):  # type: ignore[no-untyped-def]
    from api.ops.worker_lifecycle import ServingMarks

    return ServingMarks(master_pid)


def when_ready(server):  # type: ignore[no-untyped-def]
    """Before the first fork: the modules every worker imports, imported once in the master."""
    from api.ops.worker_lifecycle import preload_modules

    server.log.info("App modules imported in the master in %.1f s", preload_modules())


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Warm the worker before it accepts a connection, freeze the collector's view of its start-up objects,
    then mark it serving (``api/ops/worker_lifecycle.py``)."""
    from api.ops.worker_lifecycle import prepare_worker

    prepare_worker(worker, _serving_marks(worker.ppid), _settings.warm_models)


def pre_request(worker, req):  # type: ignore[no-untyped-def]
    """``max_requests`` retires a worker only while another one is warm and serving."""
    from api.ops.worker_lifecycle import hold_retirement

    hold_retirement(worker, _serving_marks(worker.ppid))


def on_starting(server):  # type: ignore[no-untyped-def]
    """Migrate the database once, in the master, before any worker starts; warn of a SQLite that
    several processes cannot share safely (never the default: see model_store.db)."""
    from model_store.artifacts import check_artifact_store
    from model_store.blob_backends import ArtifactStoreConfigError
    from model_store.db import make_engine, warn_of_sqlite
    from model_store.migrate import upgrade_to_head

    try:
        check_artifact_store(_settings.artifact_store)
    except ArtifactStoreConfigError as exc:
        raise RuntimeError(str(exc)) from None  # gunicorn prints "Error: <message>" and exits
    engine = make_engine(_settings.resolved_database_url)
    warn_of_sqlite(engine, server.log)
    upgrade_to_head(engine)
    engine.dispose()
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in METRICS_DIR.glob("*.db"):
        stale.unlink()  # samples of a previous run
    _serving_marks(server.pid).reset()


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A dead worker's live gauges leave the aggregate; its counters and histograms stay counted, folded
    into the archive files so the directory does not grow with every worker ``max_requests`` replaces."""
    from prometheus_client import multiprocess

    from api.service.metrics_fold import fold_dead_worker

    multiprocess.mark_process_dead(worker.pid)
    fold_dead_worker(METRICS_DIR, worker.pid)
    _serving_marks(server.pid).clear(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    _serving_marks(server.pid).remove()

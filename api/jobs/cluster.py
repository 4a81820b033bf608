"""Where a runner's chunks are computed: a local Dask cluster of worker processes (one thread each) by
default, or an external Dask scheduler named by ``CANDOR_DASK_SCHEDULER``. External workers need only
Candor installed (the same release as the runner): each task carries its rows and the model reaches every
worker once (``api.jobs.compute.ShipModel``), so a worker needs no data dir, database or credential.

The local cluster's scheduler and workers talk over loopback TCP (their comm ports) and open no HTTP server:
no dashboard unless ``CANDOR_DASK_DASHBOARD`` names an address for it (``api/jobs/dask_nodes.py``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from api.settings import Settings

LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def dask_client(settings: Settings) -> Iterator[Any]:
    """A connected ``distributed.Client``, closed (with its local cluster, if any) on exit."""
    from distributed import Client

    if settings.dask_scheduler:
        with Client(settings.dask_scheduler) as client:
            yield client
        return
    with local_cluster(settings) as cluster, Client(cluster) as client:
        yield client


def local_cluster(settings: Settings) -> Any:
    """A ``distributed.SpecCluster`` laid out as ``LocalCluster(processes=True, threads_per_worker=1)`` on
    loopback, with the HTTP-less nodes unless ``settings.dask_dashboard`` asks for a dashboard."""
    from distributed import Nanny, Scheduler, SpecCluster

    from api.jobs.dask_nodes import QuietScheduler, QuietWorker

    n_workers = max(1, settings.dask_workers)
    dashboard = settings.dask_dashboard.strip()
    scheduler_options = {
        "host": LOOPBACK,
        "port": 0,
        "dashboard": bool(dashboard),
        "dashboard_address": dashboard or None,
    }
    worker_options = {
        "host": LOOPBACK,
        "nthreads": 1,
        "dashboard": False,
        "worker_class": QuietWorker,
        "memory_limit": 1.0 / n_workers,  # the machine's memory shared out, as LocalCluster does
        "silence_logs": logging.WARN,
    }
    return SpecCluster(
        scheduler={"cls": Scheduler if dashboard else QuietScheduler, "options": scheduler_options},
        workers={i: {"cls": Nanny, "options": worker_options} for i in range(n_workers)},
        silence_logs=logging.WARN,
        name="candor-jobs",
    )


def worker_count(client: Any) -> int:
    """How many workers the scheduler has now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))

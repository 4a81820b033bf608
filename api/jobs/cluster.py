"""Where a runner's chunks are computed: a ``distributed.LocalCluster`` of worker processes (one thread
each) by default, or an external Dask scheduler named by ``CANDOR_DASK_SCHEDULER``. External workers must
have Candor installed and see the same data dir and database as the runner."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from api.settings import Settings


@contextlib.contextmanager
def dask_client(settings: Settings) -> Iterator[Any]:
    """A connected ``distributed.Client``, closed (with its LocalCluster, if any) on exit."""
    from distributed import Client, LocalCluster

    if settings.dask_scheduler:
        with Client(settings.dask_scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=max(1, settings.dask_workers),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",  # scheduler and workers on loopback only, no dashboard (no open ports)
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def worker_count(client: Any) -> int:
    """How many workers the scheduler has now (at least 1)."""
    return max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))

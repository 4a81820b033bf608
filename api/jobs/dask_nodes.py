"""Dask scheduler and worker classes that open no HTTP server: ``distributed`` starts one on every scheduler
(the dashboard, on 8787 by default, even with ``dashboard=False``: it still serves ``/health`` and
``/metrics``) and on every worker (a random port). The runner's LocalCluster uses these unless a dashboard is
asked for (``CANDOR_DASK_DASHBOARD``); its nodes then listen only on their loopback comm ports."""

from __future__ import annotations

from typing import Any

from distributed import Scheduler, Worker


class _NoHttpServer:
    """Skips ``ServerNode.start_http_server``: no ``http_server``, no ``dashboard`` service."""

    def start_http_server(self, *args: Any, **kwargs: Any) -> None:
        return None


class QuietScheduler(_NoHttpServer, Scheduler):
    """A scheduler without the HTTP server (no dashboard, no HTTP ``/health`` or ``/metrics``)."""


class QuietWorker(_NoHttpServer, Worker):
    """A worker without the HTTP server."""

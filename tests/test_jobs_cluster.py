"""The runner's local Dask cluster opens no HTTP server (no dashboard) unless ``CANDOR_DASK_DASHBOARD``
asks for one: every port its processes listen on is a scheduler, nanny or worker comm port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests

from api.jobs.cluster import dask_client
from api.settings import Settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listening_ports() -> set[int]:
    """TCP ports this process and its children (the cluster's worker processes) listen on."""
    me = psutil.Process()
    ports = set()
    for process in [me, *me.children(recursive=True)]:
        for conn in process.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                ports.add(conn.laddr.port)
    return ports


def _comm_ports(client: Any) -> set[int]:
    """The comm ports the scheduler knows: its own, each worker's and each worker's nanny's."""
    info = client.scheduler_info(n_workers=-1)
    addresses = [info["address"]]
    for address, worker in info["workers"].items():
        addresses += [address, worker.get("nanny") or address]
    return {int(address.rsplit(":", 1)[1]) for address in addresses}


@pytest.fixture
def quiet_client() -> Iterator[Any]:
    with dask_client(Settings.load({"dask_workers": 1}, environ={})) as client:
        yield client


def test_the_runners_cluster_opens_no_dashboard_and_no_http_port(quiet_client: Any) -> None:
    assert quiet_client.submit(sum, [1, 2]).result(timeout=60) == 3
    assert quiet_client.cluster.dashboard_link == ""
    assert "dashboard" not in quiet_client.scheduler_info()["services"]
    before = _listening_ports()
    assert before == _comm_ports(quiet_client), "a port other than the Dask comm ports is open"
    assert all(address.startswith("tcp://127.0.0.1:") for address in _addresses(quiet_client))


def _addresses(client: Any) -> list[str]:
    info = client.scheduler_info(n_workers=-1)
    return [info["address"], *info["workers"]]


def test_the_dashboard_setting_turns_the_dashboard_on() -> None:
    port = _free_port()
    settings = Settings.load({"dask_workers": 1}, environ={"CANDOR_DASK_DASHBOARD": f"127.0.0.1:{port}"})
    assert settings.dask_dashboard == f"127.0.0.1:{port}"
    with dask_client(settings) as client:
        assert client.cluster.dashboard_link == f"http://127.0.0.1:{port}/status"
        assert port in _listening_ports() - _comm_ports(client)
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=10).text == "ok"

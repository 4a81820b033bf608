"""The harness of the external-cluster tests (``tests/dask_processes.py``) really makes separate machines:
each ``dask worker`` runs in its own empty directory, without Candor's, PostgreSQL's or a database's
settings, without sight of the test's data dir or PostgreSQL's socket, and (netns mode) in its own network
namespace on its own address, where PostgreSQL's port cannot be reached. Killing a worker takes it away;
the scheduler comes back on its address and the workers with it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dask_processes import POSTGRES_SOCKETS, ROOT, DaskProcesses, network_mode, worker_view


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("candor-data")
    (data / "candor.db").write_bytes(b"not for workers")
    (data / "models").mkdir()
    return data


@pytest.fixture(scope="module", params=[network_mode()])
def machines(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[DaskProcesses]:
    """The cluster; the network mode is in each test's id (``[netns]`` or ``[loopback]``)."""
    with DaskProcesses(hidden=[data_dir], n_workers=2, network=request.param) as cluster:
        print(f"\nexternal Dask cluster: network mode {cluster.mode}, scheduler {cluster.address}")
        yield cluster


def views(machines: DaskProcesses, data_dir: Path) -> dict[str, dict[str, Any]]:
    host, port = machines.address.split("//")[1].rsplit(":", 1)
    ports = [("127.0.0.1", 5432), (host, 5432), (host, int(port))]  # the last: the scheduler, reachable
    paths = [str(data_dir), str(ROOT), *POSTGRES_SOCKETS]
    with machines.client() as client:
        return client.run(worker_view, paths, ports)  # type: ignore[no-any-return]


def test_each_worker_is_a_separate_machine(machines: DaskProcesses, data_dir: Path) -> None:
    seen = views(machines, data_dir)
    assert len(seen) == 2
    assert (data_dir / "candor.db").exists()  # this process still sees it
    cwds = set()
    for view in seen.values():
        cwd = Path(view["cwd"])
        cwds.add(cwd)
        assert cwd.is_relative_to(machines.base) and not cwd.is_relative_to(data_dir)
        assert view["home"] == str(cwd)
        assert set(view["cwd_entries"]) <= {"dask-scratch-space"}  # new and empty but for Dask's own
        assert "api" in view["paths"][str(ROOT)]  # the code under test: seen (the probe can see a dir)
        assert view["configuration"] == []
        assert view["paths"][str(data_dir)] in (None, [])  # the data dir: not there, or an empty tmpfs
        for socket_dir in POSTGRES_SOCKETS:
            assert view["paths"][socket_dir] in (None, [])
        assert view["mount_namespace"] != os.readlink("/proc/self/ns/mnt")
    assert len(cwds) == 2


def test_workers_cannot_reach_postgresql_in_netns_mode(machines: DaskProcesses, data_dir: Path) -> None:
    if machines.mode != "netns":
        pytest.skip("loopback mode (no network namespaces here): PostgreSQL's port is reachable")
    seen = views(machines, data_dir)
    own = os.readlink("/proc/self/ns/net")
    namespaces = {view["net_namespace"] for view in seen.values()}
    assert own not in namespaces and len(namespaces) == 2
    scheduler = machines.address.split("//")[1]
    for view in seen.values():
        reachable = view["reachable"]
        assert reachable.pop(scheduler) is True  # the probe can connect: to the scheduler
        assert not any(reachable.values()), reachable  # PostgreSQL's port, on loopback or the host's address
    workers = sorted(address.split("//")[1].rsplit(":", 1)[0] for address in seen)
    assert workers == [machines.network.worker_address(i) for i in range(2)]  # type: ignore[union-attr]


def test_a_killed_worker_is_gone_and_the_scheduler_comes_back(machines: DaskProcesses) -> None:
    machines.kill_worker(0)
    assert machines.alive_workers() == [1]
    with machines.client() as client:
        deadline = time.monotonic() + 60
        while len(client.scheduler_info(n_workers=-1)["workers"]) != 1:
            assert time.monotonic() < deadline, "the scheduler still lists the killed worker"
            time.sleep(0.2)
    machines.restart_scheduler()
    machines.replace_lost_workers()
    machines.wait_for_workers(2)
    with machines.client() as client:
        assert client.submit(sum, [1, 2], pure=False).result(timeout=60) == 3
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2

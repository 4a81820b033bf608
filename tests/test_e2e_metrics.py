"""Metrics and logs over real HTTP: the real gunicorn with the project's config and two workers.

A scrape is answered by one worker but must count every worker's requests (prometheus-client's multiprocess
mode under ``<data_dir>/metrics``), and a worker killed with SIGKILL must not take its counts with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from gunicorn_process import STARTUP_TIMEOUT, Gunicorn, free_port, running_gunicorn, server_env
from prometheus_client.parser import text_string_to_metric_families

from model_store.store import Store

pytestmark = pytest.mark.e2e

LIST_ROUTE = "/v1/models"
MODEL_ROUTE = "/v1/models/<name>"


class Server:
    def __init__(self, base: str, data: Path, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.base, self.data, self.log, self.process = base, data, log, process
        self.explain = self.admin = ""

    def get(self, path: str, token: str, **headers: str) -> requests.Response:
        # A new connection per request ("Connection: close"), so requests are spread over the workers.
        headers = {"Authorization": f"Bearer {token}", "Connection": "close", **headers}
        return requests.get(self.base + path, headers=headers, timeout=30)

    def requests_counted(self, route: str, status: str = "200") -> float:
        response = self.get("/v1/metrics", self.admin)
        assert response.status_code == 200, response.text
        return sum(
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "candor_http_requests_total"
            and sample.labels == {"route": route, "method": "GET", "status": status}
        )

    def worker_pids(self) -> set[int]:
        """Workers that wrote samples (prometheus-client names its files ``<kind>_<pid>.db``)."""
        return {int(p.stem.rsplit("_", 1)[1]) for p in (self.data / "metrics").glob("counter_*.db")}


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("e2e-metrics").resolve()
    store = Store(data, f"sqlite:///{data}/candor.db")
    explain, _ = store.keys.create("e2e-explain", ["explain"])
    admin, _ = store.keys.create("e2e-admin", ["admin"])
    store.close()
    (data / "metrics").mkdir()
    (data / "metrics" / "counter_1.db").write_bytes(b"left over by a previous run")

    env = server_env(data, free_port(), CANDOR_WORKERS="2", CANDOR_LOG_LEVEL="info")

    def both_workers_answer(gunicorn: Gunicorn) -> bool:
        served = Server(gunicorn.base, data, gunicorn.log, gunicorn.process)
        served.explain = explain
        return len(_children(gunicorn.process.pid)) >= 2 and _answers(served)

    with running_gunicorn(env, data / "gunicorn.log", ready=both_workers_answer) as gunicorn:
        served = Server(gunicorn.base, data, gunicorn.log, gunicorn.process)
        served.explain, served.admin = explain, admin
        yield served


def _answers(server: Server) -> bool:
    try:
        return requests.get(server.base + "/v1/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def _spread(server: Server, path: str, until_workers: int = 2, batch: int = 40) -> int:
    """Requests in concurrent batches until ``until_workers`` workers have written samples; how many sent."""
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(10):
            codes = list(pool.map(lambda _: server.get(path, server.explain).status_code, range(batch)))
            assert codes == [200] * batch
            sent += batch
            if len(server.worker_pids()) >= until_workers:
                return sent
    pytest.fail(f"the requests never reached {until_workers} workers: {server.worker_pids()}")


def test_a_scrape_counts_the_requests_of_every_worker(server: Server) -> None:
    assert not (server.data / "metrics" / "counter_1.db").exists(), "the master empties the metrics dir"
    assert server.requests_counted(LIST_ROUTE) == 0
    sent = _spread(server, "/v1/models")
    # whichever worker answers each scrape, it reports the sum over both
    assert [server.requests_counted(LIST_ROUTE) for _ in range(6)] == [sent] * 6

    workers = _children(server.process.pid)
    victim = next(iter(workers))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while len(_children(server.process.pid) - {victim}) < 2:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.2)
    more = 10
    for _ in range(more):
        assert server.get("/v1/models", server.explain).status_code == 200
    assert server.requests_counted(LIST_ROUTE) == sent + more  # the dead worker's counts stay counted
    metrics = server.data / "metrics"  # folded into the archive by the master: its own files are gone
    assert not list(metrics.glob(f"*_{victim}.db")) and (metrics / "counter_archive.db").exists()


def test_access_lines_in_the_server_log_are_json_with_request_ids(server: Server) -> None:
    response = server.get("/v1/models/nope", server.explain, **{"X-Request-ID": "e2e-log-1"})
    assert response.status_code == 404
    assert response.headers["X-Request-ID"] == "e2e-log-1"
    assert response.json()["request_id"] == "e2e-log-1"
    deadline = time.monotonic() + 10
    while True:
        lines = server.log.read_text(errors="replace").splitlines()
        app_lines = [json.loads(line) for line in lines if line.startswith("{")]
        mine = [line for line in app_lines if line.get("request_id") == "e2e-log-1"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(m["logger"], m["route"], m["status"]) for m in mine] == [("candor.access", MODEL_ROUTE, 404)]
    assert server.explain.split("_", 2)[2] not in server.log.read_text(errors="replace")
    plain = [line for line in lines if not line.startswith("{")]
    assert plain, "gunicorn's own messages (start-up, workers) stay plain text"
    assert not [line for line in plain if " HTTP/1.1" in line], "gunicorn's own access log is off"

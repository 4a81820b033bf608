"""A gunicorn worker loads its models and builds their explainers before it accepts a request, at start and
when it is replaced; a worker due for replacement retires only while another worker is warm and serving."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from gunicorn_process import Gunicorn, free_port, running_gunicorn, server_env
from prometheus_client.parser import text_string_to_metric_families
from stored_files import stored_files
from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

from api.ops.worker_lifecycle import HOLD_REQUESTS, ServingMarks, hold_retirement
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store

pytestmark = pytest.mark.e2e
ROW = {"size": 7.0, "colour": "red", "weight": 50.0}


def _register(store: Store, name: str, seed: int) -> None:
    frame = tiny_frame(seed=seed)
    artifact = dump_skops(tiny_pipeline(frame, seed=seed))
    store.registry.register_tabular(parse_manifest(tiny_manifest(name)), artifact, to_parquet(frame))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, str]]:
    """One worker over ``tiny`` (v1 in production, v2 latest) and ``other`` (v1, not promoted)."""
    data = tmp_path_factory.mktemp("warmup").resolve()
    store = Store(data, f"sqlite:///{data}/candor.db")
    _register(store, "tiny", 0)
    _register(store, "tiny", 1)
    store.registry.promote("tiny", 1)
    _register(store, "other", 2)
    admin, _ = store.keys.create("warm-admin", ["admin"])
    store.close()
    env = server_env(data, free_port(), CANDOR_WORKERS="1", CANDOR_LOG_LEVEL="info")
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:
        yield gunicorn, admin


def _metric(server: Gunicorn, token: str, name: str, **labels: str) -> float:
    response = requests.get(
        server.base + "/v1/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def _warm_lines(server: Gunicorn) -> dict[int, dict[str, Any]]:
    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")]
    return {line["pid"]: line for line in lines if line.get("message") == "worker warmed"}


def _worker(server: Gunicorn) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_a_worker_has_its_models_loaded_before_its_first_request(served: tuple[Gunicorn, str]) -> None:
    server, admin = served
    pid = _worker(server)
    assert _warm_lines(server)[pid]["warmed"] == ["other:1", "tiny:1"]  # production, else latest
    assert _metric(server, admin, "candor_model_load_seconds_count", flavour="tabular") == 2
    assert _metric(server, admin, "candor_warmed_versions_total", flavour="tabular") == 2
    _first_request_finds_everything_built(server, admin)


def test_a_replacement_worker_is_warm_before_its_first_request(served: tuple[Gunicorn, str]) -> None:
    server, admin = served
    old = _worker(server)
    loads = _metric(server, admin, "candor_model_load_seconds_count", flavour="tabular")
    os.kill(old, signal.SIGTERM)  # a graceful exit, as after max_requests: the master forks a replacement
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
        if children and int(children[0]) != old:
            break
        time.sleep(0.05)
    new = _worker(server)
    assert new != old
    # the replacement accepts only once warmed: this scrape waits for it, then finds both versions loaded
    assert _metric(server, admin, "candor_model_load_seconds_count", flavour="tabular") == loads + 2
    assert _warm_lines(server)[new]["warmed"] == ["other:1", "tiny:1"]
    _first_request_finds_everything_built(server, admin)


def _first_request_finds_everything_built(server: Gunicorn, admin: str) -> None:
    misses = _metric(server, admin, "candor_model_cache_total", result="miss")
    headers = {"Authorization": f"Bearer {admin}"}
    for path in ("predict", "explain/shap"):
        url = f"{server.base}/v1/models/tiny/versions/production/{path}"
        response = requests.post(url, json={"instances": [ROW]}, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
    assert _metric(server, admin, "candor_model_cache_total", result="miss") == misses


def _marks(tmp_path: Path) -> ServingMarks:
    marks = ServingMarks(master_pid=os.getpid())
    marks.directory = tmp_path / "serving"
    marks.reset()
    return marks


def _due(pid: int, workers: int = 2) -> Any:
    """What hold_retirement reads of a gunicorn worker whose next request is its last under max_requests."""
    return SimpleNamespace(pid=pid, nr=9, max_requests=10, cfg=SimpleNamespace(workers=workers))


def test_a_worker_due_for_replacement_retires_only_while_a_sibling_serves(tmp_path: Path) -> None:
    marks = _marks(tmp_path)
    sibling = os.getpid()  # a live process stands for the sibling worker
    worker = _due(pid=1)
    marks.mark(worker.pid)
    hold_retirement(worker, marks)
    assert worker.max_requests == 10 + HOLD_REQUESTS, "no sibling serving (still warming): it keeps serving"
    assert (marks.directory / "1").exists(), "and stays marked serving"
    worker.nr = 15
    hold_retirement(worker, marks)
    assert worker.max_requests == 10 + HOLD_REQUESTS, "not due yet: unchanged"
    marks.mark(sibling)  # the replacement is warm
    worker.nr = worker.max_requests - 1
    hold_retirement(worker, marks)
    assert worker.max_requests == worker.nr + 1, "a sibling serves: it retires as due"
    assert not (marks.directory / "1").exists(), "no longer counted as serving"


def test_of_two_workers_due_together_one_retires(tmp_path: Path) -> None:
    marks = _marks(tmp_path)
    first, second = _due(pid=os.getpid()), _due(pid=os.getppid())  # two live pids
    marks.mark(first.pid)
    marks.mark(second.pid)
    hold_retirement(first, marks)
    hold_retirement(second, marks)
    assert first.max_requests == 10, "the first retires"
    assert second.max_requests == 10 + HOLD_REQUESTS, "the second holds until a replacement serves"


def test_a_dead_workers_mark_does_not_count_and_a_lone_worker_retires(tmp_path: Path) -> None:
    marks = _marks(tmp_path)
    marks.mark(2**22 + 12345)  # above the default pid_max: no such process
    assert not marks.others_serving(1)
    lone = _due(pid=1, workers=1)
    hold_retirement(lone, marks)
    assert lone.max_requests == 10


def test_a_model_that_fails_to_warm_is_skipped_and_a_missing_database_warms_nothing(
    tmp_path: Path,
) -> None:
    from api.http.app import create_app
    from api.ops.warmup import warm

    store = Store(tmp_path, f"sqlite:///{tmp_path}/candor.db")
    _register(store, "tiny", 0)
    _register(store, "broken", 1)
    broken = store.registry.resolve("broken", "latest")
    store.close()
    for stored in stored_files(store, broken).values():
        stored.write_bytes(b"changed on disk")  # its sha256 no longer matches: loading it is refused
    app = create_app({"data_dir": tmp_path})
    report = warm(app.extensions["candor"].service, "tabular")
    assert (report["warmed"], report["failed"]) == (["tiny:1"], ["broken:1"])
    app.extensions["candor"].store.close()
    for path in tmp_path.glob("candor.db*"):
        path.unlink()
    (tmp_path / "candor.db").mkdir()  # the database is gone: listing the models fails
    assert warm(app.extensions["candor"].service, "tabular")["warmed"] == []

"""A runner killed with SIGKILL in the middle of a job: the real ``candor jobs run`` process is killed after
it committed some chunks and before the last, a second runner takes the job over once its heartbeat is
stale, and the result holds every row exactly once, in order, with one audit record per row, in a log that
verifies. The runner does not warn of the WAL-reset bug: the default SQLite setup is not exposed to it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from flask import Flask

from api.jobs.compute import warm_up
from api.jobs.runner import Runner
from model_store.audit import RecordFilter
from model_store.audit_blobs import verify_trail
from model_store.jobs import JobStore

ROOT = Path(__file__).resolve().parent.parent
STALE_SECONDS = 3


@pytest.fixture(scope="module")
def dask_client() -> Any:
    from distributed import Client

    from api.jobs.cluster import local_cluster
    from api.settings import Settings

    # the runner's own cluster: no dashboard, so no fight over port 8787 with another test run
    with local_cluster(Settings.load({"dask_workers": 1}, environ={})) as cluster, Client(cluster) as client:
        client.run(warm_up)  # imports done before the clock of the test starts
        yield client


def start_runner(app: Flask, log: Path) -> subprocess.Popen[bytes]:
    settings = app.extensions["candor"].settings
    env = {
        **os.environ,
        "CANDOR_DATA_DIR": str(settings.data_dir),
        "CANDOR_DATABASE_URL": settings.resolved_database_url,
        "CANDOR_DASK_WORKERS": "1",
        "CANDOR_JOB_HEARTBEAT_SECONDS": "1",
        "CANDOR_JOB_STALE_SECONDS": str(STALE_SECONDS),
        "CANDOR_LOG_LEVEL": "warning",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api.ops.cli", "jobs", "run"], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the runner, then the Dask processes it started (by pid, as listed before the kill)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def test_a_killed_runner_loses_and_duplicates_nothing(
    make_app: Any, tmp_path: Path, dask_client: Any
) -> None:
    app = make_app(job_chunk_rows=10)
    context = app.extensions["candor"]
    token = context.store.keys.create("jobs", ["explain"])[0]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": "loan", "version": "1", "kind": "shap", "dataset": "reference"}
    job_id = client.post("/v1/jobs", json=body, headers=headers).get_json()["id"]
    jobs = JobStore(context.store.sessions, context.settings.data_dir)
    total_chunks = jobs.get(job_id)["chunks_total"]
    assert total_chunks == 100

    runner = start_runner(app, tmp_path / "runner.log")
    try:
        deadline = time.monotonic() + 120
        while jobs.get(job_id)["chunks_done"] < 3:
            assert runner.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, "the runner committed nothing in time"
            time.sleep(0.01)
    finally:
        kill_tree(runner)
    assert "WAL-reset bug" not in (tmp_path / "runner.log").read_text()  # the default takes turns
    killed_at = jobs.get(job_id)
    assert killed_at["status"] == "running"
    assert 3 <= killed_at["chunks_done"] < total_chunks, killed_at
    first_runner = killed_at["runner_id"]

    # The killed runner's heartbeat goes stale; until then nobody may take the job.
    settings = dataclasses.replace(context.settings, job_stale_seconds=STALE_SECONDS)
    second = Runner(settings, store=context.store)
    if time.time() - killed_at["heartbeat_at"].timestamp() < STALE_SECONDS - 1:
        assert second.run(once=True, client=dask_client) == 0
    time.sleep(STALE_SECONDS + 0.5)
    assert second.run(once=True, client=dask_client) == 1

    job = jobs.get(job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2 and job["runner_id"] != first_runner
    assert job["rows_done"] == 1000 and job["chunks_done"] == total_chunks
    response = client.get(f"/v1/jobs/{job_id}/result", headers=headers)
    lines = [orjson.loads(line) for line in response.data.splitlines()]
    assert [line["row"] for line in lines] == list(range(1000))
    assert all(line["status"] == "ok" for line in lines)
    records = [
        r for r in context.store.audit.stream(RecordFilter()) if r.get("source", {}).get("job_id") == job_id
    ]
    assert len(records) == 1000
    assert sorted(r["source"]["row"] for r in records) == list(range(1000))
    assert {r["id"] for r in records} == {line["explanation_id"] for line in lines}
    assert verify_trail(context.store.audit_log)["ok"]
    assert len(jobs.chunk_digests(job_id)) == total_chunks  # each chunk stored once, none twice

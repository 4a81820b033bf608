"""The job table on SQLite and PostgreSQL: one claimer per job, stale jobs reclaimed, guarded progress, and
a job run end to end on each backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from flask import Flask

from api.demo import install_demos
from api.jobs.runner import Runner
from model_store.audit_blobs import verify_trail
from model_store.jobs import MAX_ATTEMPTS, ChunkProgress, JobStore, LostJob, NewJob
from model_store.store import Store
from model_store.tables import JobInputRow

CLAIMERS = 6


def new_job(jobs: JobStore, rows: int = 10) -> str:
    with jobs.files.staging() as staging:
        pq.write_table(pa.table({"x": list(range(rows))}), staging / "input.parquet", row_group_size=5)
        new = NewJob("loan", 1, "shap", {}, {"type": "upload"}, "key1", rows, 5)
        return str(jobs.create(new, staging / "input.parquet")["id"])


def test_one_claimer_gets_the_job(store: Store, database_url: str, tmp_path: Path) -> None:
    jobs = JobStore(store.sessions, tmp_path / "data")
    job_id = new_job(jobs)
    stores = [Store(tmp_path / "data", database_url) for _ in range(CLAIMERS)]
    barrier = threading.Barrier(CLAIMERS)
    got: list[dict[str, Any] | None] = [None] * CLAIMERS

    def claim(index: int) -> None:
        claimer = JobStore(stores[index].sessions, tmp_path / "data")
        barrier.wait()
        got[index] = claimer.claim(f"runner-{index}", stale_seconds=60)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(CLAIMERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for other in stores:
        other.close()
    winners = [job for job in got if job is not None]
    assert len(winners) == 1, got
    assert winners[0]["id"] == job_id and winners[0]["attempts"] == 1
    job = jobs.get(job_id)
    assert job["status"] == "running" and job["runner_id"] == winners[0]["runner_id"]


def test_two_jobs_two_claimers(store: Store, database_url: str, tmp_path: Path) -> None:
    """SKIP LOCKED (PostgreSQL) and the write lock (SQLite) hand each claimer a different job."""
    jobs = JobStore(store.sessions, tmp_path / "data")
    ids = {new_job(jobs), new_job(jobs)}
    first = jobs.claim("a", 60)
    second = jobs.claim("b", 60)
    assert first is not None and second is not None
    assert {first["id"], second["id"]} == ids
    assert jobs.claim("c", 60) is None


def test_stale_jobs_are_reclaimed_and_the_old_runner_is_fenced(store: Store, tmp_path: Path) -> None:
    jobs = JobStore(store.sessions, tmp_path / "data")
    job_id = new_job(jobs)
    assert jobs.claim("old", stale_seconds=60) is not None
    assert jobs.claim("new", stale_seconds=60) is None  # the heartbeat is fresh
    time.sleep(0.05)
    taken = jobs.claim("new", stale_seconds=0.01)
    assert taken is not None and taken["runner_id"] == "new" and taken["attempts"] == 2
    assert not jobs.heartbeat(job_id, "old")
    with pytest.raises(LostJob), store.sessions.begin() as session:
        jobs.advance(session, job_id, "old", ChunkProgress(0, 5, 0), {})
    with store.sessions.begin() as session:
        jobs.advance(session, job_id, "new", ChunkProgress(0, 5, 0), {"acc": {}})
    with pytest.raises(LostJob), store.sessions.begin() as session:  # chunk 0 again: not the next one
        jobs.advance(session, job_id, "new", ChunkProgress(0, 5, 0), {})
    job = jobs.get(job_id)
    assert (job["chunks_done"], job["rows_done"]) == (1, 5)
    assert jobs.release(job_id, "new")
    assert jobs.get(job_id)["status"] == "queued"
    assert jobs.claim("next", 60)["chunks_done"] == 1  # type: ignore[index]


def test_a_job_that_keeps_killing_its_runners_fails(store: Store, tmp_path: Path) -> None:
    jobs = JobStore(store.sessions, tmp_path / "data")
    job_id = new_job(jobs)
    for attempt in range(MAX_ATTEMPTS):
        time.sleep(0.02)
        assert jobs.claim(f"r{attempt}", stale_seconds=0.01) is not None
    time.sleep(0.02)
    assert jobs.claim("last", stale_seconds=0.01) is None
    job = jobs.get(job_id)
    assert job["status"] == "failed" and "5 times" in job["error"]
    assert not jobs.has_input(job_id), "a job given up on has its input deleted"


def test_visibility_and_cancel_rules(store: Store, tmp_path: Path) -> None:
    from model_store.errors import Conflict, NotFound

    jobs = JobStore(store.sessions, tmp_path / "data")
    job_id = new_job(jobs)
    with pytest.raises(NotFound):
        jobs.get(job_id, key_id="key2", admin=False)
    assert jobs.get(job_id, key_id="key1", admin=False)["id"] == job_id
    assert jobs.claim("r", 60) is not None
    assert jobs.cancel(job_id)["status"] == "cancelled"
    assert not jobs.has_input(job_id), "a cancelled job's input goes with the cancel, running or not"
    assert not jobs.heartbeat(job_id, "r")
    assert not jobs.finish(job_id, "r", "succeeded")
    other = new_job(jobs)
    assert jobs.claim("r", 60) is not None
    assert jobs.finish(other, "r", "succeeded")
    with pytest.raises(Conflict):
        jobs.cancel(other)


def test_a_reasons_job_runs_row_by_row(make_app: Callable[..., Flask], dask_cluster: Any) -> None:
    """The whole path for a kind computed row by row (on each backend the ``make_app`` fixture offers)."""
    app = make_app(job_chunk_rows=4)
    store = app.extensions["candor"].store
    if store.registry.list_models() == []:
        install_demos(store.registry, names=("loan",))
    token = store.keys.create("jobs", ["explain"])[0]
    client = app.test_client()
    body = {"model": "loan", "version": "latest", "kind": "reasons", "options": {"max_reasons": 2}}
    rows = store.registry.load(store.registry.resolve("loan", "latest")).reference.head(9)
    import io

    form = {
        "model": body["model"],
        "version": body["version"],
        "kind": body["kind"],
        "options": '{"max_reasons": 2}',
        "file": (io.BytesIO(rows.to_csv(index=False).encode()), "rows.csv"),
    }
    headers = {"Authorization": f"Bearer {token}"}
    submitted = client.post("/v1/jobs", data=form, headers=headers, content_type="multipart/form-data")
    assert submitted.status_code == 202, submitted.data
    job_id = submitted.get_json()["id"]
    assert Runner(app.extensions["candor"].settings, store=store).run(once=True, client=dask_cluster) == 1
    job = client.get(f"/v1/jobs/{job_id}", headers=headers).get_json()
    assert job["status"] == "succeeded" and job["progress"]["rows_done"] == 9
    lines = client.get(f"/v1/jobs/{job_id}/result", headers=headers).data.splitlines()
    assert len(lines) == 9
    summary = job["summary"]
    assert sum(summary["status_counts"].values()) == 9
    assert all(item["count"] >= item["first_reason"] for item in summary["reason_counts"])
    verdict = verify_trail(store.audit_log)
    assert verdict["ok"] and verdict["checked"] >= 9


@pytest.fixture(scope="module")
def dask_cluster() -> Any:
    from distributed import Client

    from api.jobs.cluster import local_cluster
    from api.settings import Settings

    # the runner's own cluster: no dashboard, so no fight over port 8787 with another test run
    with local_cluster(Settings.load({"dask_workers": 1}, environ={})) as cluster, Client(cluster) as client:
        yield client


def test_a_job_queued_by_an_earlier_release_has_its_input_file_adopted(store: Store, tmp_path: Path) -> None:
    """Before inputs were stored with their jobs, a job's rows were ``jobs/<id>/input.parquet`` on the host
    that took it: its runners store them in the database, so any host's runner can run the job."""
    jobs = JobStore(store.sessions, tmp_path / "data")
    job_id = new_job(jobs, rows=12)
    expected = [jobs.input_chunk(job_id, chunk) for chunk in range(3)]
    legacy = jobs.files.input_path(job_id)
    legacy.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": list(range(12))}), legacy, row_group_size=5)
    with store.sessions.begin() as session:
        session.execute(sa.delete(JobInputRow).where(JobInputRow.job_id == job_id))
    assert jobs.input_chunk(job_id, 2) == expected[2], "read from the file until it is adopted"
    assert jobs.adopt_local_inputs() == 1 and not legacy.exists()
    assert [jobs.input_chunk(job_id, chunk) for chunk in range(3)] == expected
    assert jobs.adopt_local_inputs() == 0

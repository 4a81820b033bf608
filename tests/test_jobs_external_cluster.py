"""Jobs on an external Dask cluster of separate machines (``tests/dask_processes.py``): a real ``dask
scheduler`` and two ``dask worker`` processes, each in its own empty directory and environment, without
sight of the data dir, the database settings or PostgreSQL's socket (and, where the machine allows, in
their own network namespaces, out of PostgreSQL's reach). The runner is the real ``candor jobs run``
process with ``CANDOR_DASK_SCHEDULER``; the job store is on PostgreSQL.

- A TreeSHAP job and a counterfactual job, a worker killed (SIGKILL, no nanny) in the middle of each: both
  succeed with every row exactly once, TreeSHAP equal to shap called directly, every counterfactual valid
  when the model re-scores it, one audit record per row and a log that verifies.
- The scheduler killed in the middle of a job: the job is not failed; once the scheduler is back on its
  address (and the workers with it) the job resumes at its last committed chunk and completes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from dask_processes import DaskProcesses, network_mode
from flask import Flask

from api.demo import LOAN_TARGET, german_credit, loan_model
from model_store.audit import RecordFilter
from model_store.audit_blobs import verify_trail
from model_store.jobs import JobStore

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("CANDOR_TEST_POSTGRES_URL", "")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("app_factory", ["postgres"], indirect=True),
]
CHUNK_ROWS = 10
TIMEOUT = 240.0


@pytest.fixture(autouse=True)
def _postgres_is_set() -> None:
    if not POSTGRES_URL:
        pytest.fail(
            "CANDOR_TEST_POSTGRES_URL is not set: several machines need PostgreSQL (.ci/run starts it)"
        )


@pytest.fixture(params=[network_mode()])
def machines(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaskProcesses]:
    """Two workers that see none of this session's temporary dirs (every app's data dir is in them); the
    network mode is in each test's id (``[netns]`` or ``[loopback]``)."""
    hidden = [tmp_path_factory.getbasetemp()]
    with DaskProcesses(hidden=hidden, n_workers=2, network=request.param) as cluster:
        print(f"\nexternal Dask cluster: network mode {cluster.mode}, scheduler {cluster.address}")
        yield cluster


# -- the runner, a real process ---------------------------------------------------------------------------
@contextlib.contextmanager
def runner(app: Flask, scheduler: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    settings = app.extensions["candor"].settings
    env = {
        **os.environ,
        "CANDOR_DATA_DIR": str(settings.data_dir),
        "CANDOR_DATABASE_URL": settings.resolved_database_url,
        "CANDOR_DASK_SCHEDULER": scheduler,
        "CANDOR_JOB_HEARTBEAT_SECONDS": "1",
        "CANDOR_JOB_STALE_SECONDS": "5",
        "CANDOR_LOG_LEVEL": "info",
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api.ops.cli", "jobs", "run"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


class Watch:
    """Polls a job, keeping every state it was seen in."""

    def __init__(self, jobs: JobStore, job_id: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.jobs, self.job_id, self.proc, self.log = jobs, job_id, proc, log
        self.seen: list[tuple[str, int, int]] = []

    def until(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT
        while True:
            job = self.jobs.get(self.job_id)
            self.seen.append((job["status"], job["chunks_done"], job["attempts"]))
            if done(job):
                return job
            assert self.proc.poll() is None, "the runner exited: " + self.log.read_text()[-4000:]
            assert job["status"] != "failed", (job, self.log.read_text()[-4000:])
            assert time.monotonic() < deadline, f"{what}: not in time: {job}"
            time.sleep(0.005)

    def chunks_never_went_back(self) -> None:
        done = [chunks for _, chunks, _ in self.seen]
        assert done == sorted(done), "chunks_done went backwards"


# -- data and oracles -------------------------------------------------------------------------------------
@cache
def pipeline() -> Any:
    return loan_model()[1]


def loan_rows() -> pd.DataFrame:
    return german_credit().drop(columns=[LOAN_TARGET]).reset_index(drop=True)


def declined_rows() -> pd.DataFrame:
    rows = loan_rows()
    good = list(pipeline().classes_).index("good")
    return rows[pipeline().predict_proba(rows)[:, good] < 0.5].reset_index(drop=True)


def submit(app: Flask, token: str, frame: pd.DataFrame, kind: str, options: dict[str, Any]) -> str:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    buffer.seek(0)
    form = {
        "model": "loan",
        "version": "1",
        "kind": kind,
        "options": json.dumps(options),
        "file": (buffer, "rows.parquet"),
    }
    answer = app.test_client().post(
        "/v1/jobs", data=form, headers=bearer(token), content_type="multipart/form-data"
    )
    assert answer.status_code == 202, answer.data
    return str(answer.get_json()["id"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def every_row_once(app: Flask, token: str, job_id: str, n: int) -> list[dict[str, Any]]:
    """The job's result lines (checked: rows 0..n-1, once each, in order, all ok), with one audit record
    per row naming it, and each chunk stored once."""
    response = app.test_client().get(f"/v1/jobs/{job_id}/result", headers=bearer(token))
    assert response.status_code == 200, response.data
    lines = [orjson.loads(line) for line in response.data.splitlines()]
    assert [line["row"] for line in lines] == list(range(n))
    assert all(line["status"] == "ok" for line in lines), [x for x in lines if x["status"] != "ok"][:2]
    store = app.extensions["candor"].store
    records = [r for r in store.audit.stream(RecordFilter()) if r.get("source", {}).get("job_id") == job_id]
    assert sorted(r["source"]["row"] for r in records) == list(range(n))
    assert {r["id"] for r in records} == {line["explanation_id"] for line in lines}
    jobs = JobStore(store.sessions, app.extensions["candor"].settings.data_dir)
    assert len(jobs.chunk_digests(job_id)) == jobs.get(job_id)["chunks_total"]
    return lines


def log_verifies(app: Flask, audit_token: str) -> None:
    assert verify_trail(app.extensions["candor"].store.audit_log)["ok"]
    verdict = app.test_client().get("/v1/audit/verify", headers=bearer(audit_token))
    assert verdict.status_code == 200 and verdict.get_json()["ok"], verdict.data


def raw_feature_shap(rows: pd.DataFrame) -> list[dict[str, float]]:
    """shap called directly (TreeExplainer on the model's margin), summed per raw feature."""
    import shap

    model = pipeline()
    values = np.asarray(shap.TreeExplainer(model[-1]).shap_values(model[:-1].transform(rows)))
    owners: list[str] = []
    for _name, transformer, columns in model[0].transformers_:
        categories = getattr(transformer, "categories_", None)
        if categories is None:
            owners += list(columns)
        else:
            owners += [c for c, cats in zip(columns, categories, strict=True) for _ in cats]
    owner = np.asarray(owners)
    return [{f: float(row[owner == f].sum()) for f in rows.columns} for row in values]


def check_shap(lines: list[dict[str, Any]], rows: pd.DataFrame, picked: list[int]) -> None:
    for line, expected in zip([lines[i] for i in picked], raw_feature_shap(rows.iloc[picked]), strict=True):
        got = {a["feature"]: a["attribution"] for a in line["result"]["attributions"]}
        assert got.keys() == expected.keys()
        for feature, value in got.items():
            assert value == pytest.approx(expected[feature], abs=1e-6), (line["row"], feature)


def check_counterfactuals(lines: list[dict[str, Any]], rows: pd.DataFrame) -> None:
    """Every counterfactual, re-scored by the pipeline itself, gets the favourable class, and differs from
    its own line's row in exactly the features its ``changes`` name (each result is its row's)."""
    found = [cf["instance"] for line in lines for cf in line["result"]["counterfactuals"]]
    assert len(found) >= len(lines)  # most declined rows get their 2
    frame = pd.DataFrame.from_records(found, columns=list(rows.columns))
    assert (pipeline().predict(frame) == "good").all()
    assert {line["result"]["status"] for line in lines} <= {"ok", "no_counterfactual"}
    originals = json.loads(rows.to_json(orient="records"))
    for line in lines:
        row = originals[line["row"]]
        for cf in line["result"]["counterfactuals"]:
            moved = {f for f, value in cf["instance"].items() if value != row[f]}
            assert moved == {change["feature"] for change in cf["changes"]}, (line["row"], cf)


def the_model_once(
    machines: DaskProcesses, log: str, job_id: str, before: dict[int, int | None], survivor: int
) -> None:
    """The runner counted the model once per worker; in netns mode the surviving worker's link carried the
    model once, the rows and Dask's messages: not the model per task, nor again when a replica was dropped."""
    found = re.search(
        rf"job {job_id}: sent \d+ bytes .*the model, (\d+) bytes, to each of 2; rows (\d+) bytes", log
    )
    assert found is not None, log[-3000:]
    model, rows = int(found.group(1)), int(found.group(2))
    carried = machines.bytes_to_workers()[survivor]
    if carried is None:  # loopback mode: no link of its own to count on
        return
    sent = carried - (before[survivor] or 0)
    assert model <= sent < 1.5 * model + rows + 2**21, (sent, model, rows)


# -- the tests --------------------------------------------------------------------------------------------
def test_jobs_survive_a_killed_worker(make_app: Any, machines: DaskProcesses, tmp_path: Path) -> None:
    app = make_app(job_chunk_rows=CHUNK_ROWS)
    store = app.extensions["candor"].store
    token = store.keys.create("jobs", ["explain"])[0]
    audit_token = store.keys.create("auditor", ["audit:read"])[0]
    jobs = JobStore(store.sessions, app.extensions["candor"].settings.data_dir)
    shap_rows, cf_rows = loan_rows(), declined_rows()
    jobs_and_rows = [
        ("shap", {}, shap_rows, 0),  # worker 0 killed in the middle of the TreeSHAP job
        ("counterfactuals", {"total_cfs": 2, "seed": 3}, cf_rows, 1),  # worker 1 in the next one's
    ]
    log = tmp_path / "runner.log"
    ids = []
    with runner(app, machines.address, log) as proc:
        for kind, options, rows, victim in jobs_and_rows:
            # submitted once both workers are up, so the job's model is shipped to both
            before = machines.bytes_to_workers()
            job_id = submit(app, token, rows, kind, options)
            ids.append(job_id)
            watch = Watch(jobs, job_id, proc, log)
            watch.until(lambda job: job["chunks_done"] >= 2, "the first chunks")
            machines.kill_worker(victim)
            killed_at = jobs.get(job_id)
            assert killed_at["chunks_done"] < killed_at["chunks_total"], "the job ended before the kill"
            job = watch.until(lambda job: job["status"] == "succeeded", "the job's end")
            watch.chunks_never_went_back()
            # Dask rescheduled the lost worker's tasks on the other: one claim, never given back
            claims = re.findall(rf"job {job_id}: claimed at chunk (\d+)", log.read_text())
            assert claims == ["0"] and job["attempts"] == 1, log.read_text()[-4000:]
            the_model_once(machines, log.read_text(), job_id, before, survivor=1 - victim)
            machines.replace_lost_workers()  # the next job starts with two workers again
            machines.wait_for_workers(2)

    shap_id, cf_id = ids
    shap_lines = every_row_once(app, token, shap_id, len(shap_rows))
    check_shap(shap_lines, shap_rows, [0, 1, 2, 517, len(shap_rows) - 1])
    cf_lines = every_row_once(app, token, cf_id, len(cf_rows))
    check_counterfactuals(cf_lines, cf_rows)
    log_verifies(app, audit_token)


def test_a_lost_scheduler_fails_the_attempt_and_the_job_resumes(
    make_app: Any, machines: DaskProcesses, tmp_path: Path
) -> None:
    app = make_app(job_chunk_rows=CHUNK_ROWS)
    store = app.extensions["candor"].store
    token = store.keys.create("jobs", ["explain"])[0]
    audit_token = store.keys.create("auditor", ["audit:read"])[0]
    jobs = JobStore(store.sessions, app.extensions["candor"].settings.data_dir)
    rows = loan_rows()
    job_id = submit(app, token, rows, "shap", {})
    log = tmp_path / "runner.log"

    with runner(app, machines.address, log) as proc:
        watch = Watch(jobs, job_id, proc, log)
        running = watch.until(lambda job: job["chunks_done"] >= 3, "the first chunks")
        machines.kill_scheduler()
        lost_at = jobs.get(job_id)
        assert lost_at["chunks_done"] < lost_at["chunks_total"], "the job ended before the kill"
        released = watch.until(lambda job: job["status"] == "queued", "the job given back")
        time.sleep(3)  # the scheduler stays away a while: the job waits, neither failed nor run
        waiting = watch.until(lambda job: True, "")
        assert (waiting["status"], waiting["chunks_done"]) == ("queued", released["chunks_done"]), (
            sorted(set(watch.seen)),
            log.read_text()[-3000:],
        )

        machines.restart_scheduler()
        machines.replace_lost_workers()
        job = watch.until(lambda job: job["status"] == "succeeded", "the job's end")
    watch.chunks_never_went_back()
    # Claimed again at the last committed chunk; giving a job back is not charged to its attempts
    # (those count runners that died holding it).
    claims = re.findall(rf"job {job_id}: claimed at chunk (\d+) \(attempt (\d+)\)", log.read_text())
    attempt = str(running["attempts"])
    assert claims[0] == ("0", attempt) and len(claims) >= 2, claims
    # (a claim while the workers are still coming back may be given back again, at the same chunk)
    assert set(claims[1:]) == {(str(released["chunks_done"]), attempt)}, claims
    assert job["attempts"] == running["attempts"] == 1
    assert 3 <= released["chunks_done"] < job["chunks_total"]
    lines = every_row_once(app, token, job_id, len(rows))
    check_shap(lines, rows, [0, len(rows) // 2, len(rows) - 1])
    log_verifies(app, audit_token)

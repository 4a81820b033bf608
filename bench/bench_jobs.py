"""TreeSHAP over 100,000 ``loan`` rows: a batch job on a 2-worker LocalCluster against shap in one process.

Run from the repository root: ``.venv/bin/python bench/bench_jobs.py [--rows N] [--layout records|columnar]``
(or ``make bench``).

- Rows: the German credit applications (the ``loan`` reference data) resampled with replacement, seed 0.
- Job side: a throw-away data dir with ``loan`` registered, the real runner (``candor jobs run`` as its own
  process, ``CANDOR_DASK_WORKERS=2``, default chunk of 1,000 rows), warmed by a 4,000-row job first
  (workers started, explainers imported, the model loaded in each worker); then the rows are uploaded as
  Parquet to ``POST /v1/jobs`` (the Flask app in this process) and the job is timed from the upload to
  ``succeeded``. That time includes what every job does: the per-row envelopes and one audit record per row,
  stored with its chunk (compressed, the job's result read from the same bytes) and committed with it; the
  records get their place in the audit log's tree in the runner's background integration.
- In-process side, in a fresh process: the same pipeline, ``shap.TreeExplainer(model)`` (the model's margin,
  log-odds: the service's default output space for ``loan``), ``pipeline[:-1].transform(rows)`` then
  ``shap_values`` over all rows.
- Memory: peak RSS of the runner process and of each Dask worker (sampled every 0.1 s), and of the
  in-process side. Correctness: the job's attributions equal the in-process values summed per raw feature
  (exit status 1 above 1e-6); the job wrote one record per row and the log verifies. Trail bytes per row:
  the job's stored chunks (compressed) and its records' rows (their columns), over its rows.
Prints a markdown table; writes ``bench/results/jobs.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.demo import LOAN_TARGET, german_credit, install_demos  # noqa: E402
from api.http.app import create_app  # noqa: E402
from api.jobs.inputs import target_schema, write_input  # noqa: E402
from explainers.envelope import new_explanation_id  # noqa: E402
from model_store import job_inputs  # noqa: E402
from model_store.audit_blobs import verify_trail  # noqa: E402
from model_store.jobs import JobFiles, JobStore  # noqa: E402
from model_store.store import Store  # noqa: E402

GOAL_RATIO = 2.5
GOAL_BYTES_PER_ROW = 1024
MAX_ABS_DIFF = 1e-6
SEED = 0
WORKERS = 2
CHUNK_ROWS = 1000

IN_PROCESS = """
import json, resource, sys, time
import numpy as np, pandas as pd, shap
sys.path.insert(0, {root!r})
from api.demo import loan_model
_, pipeline, _ = loan_model()
rows = pd.read_parquet({path!r})
started = time.perf_counter()
explainer = shap.TreeExplainer(pipeline[-1])
values = np.asarray(explainer.shap_values(pipeline[:-1].transform(rows)))
seconds = time.perf_counter() - started
np.save({out!r}, values)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_rss_mb": peak}}))
"""


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def make_rows(n: int) -> pd.DataFrame:
    frame = german_credit().drop(columns=[LOAN_TARGET])
    return frame.sample(n=n, replace=True, random_state=SEED).reset_index(drop=True)


class MemoryWatch:
    """Peak RSS and CPU seconds (user + system, from the watch's start) of a process and of each of its
    descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peaks: dict[int, float] = {}
        self.cpu_start: dict[int, float] = {}
        self.cpu_last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss / 2**20
                    times = process.cpu_times()
                    self.names.setdefault(process.pid, " ".join(process.cmdline()[-2:]))
                except psutil.NoSuchProcess:
                    continue
                self.cpu_start.setdefault(process.pid, times.user + times.system)
                self.cpu_last[process.pid] = times.user + times.system
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0.0), rss)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        runner = self.peaks.get(self.root.pid, 0.0)
        others = sorted((v for pid, v in self.peaks.items() if pid != self.root.pid), reverse=True)
        cpu = {pid: self.cpu_last[pid] - start for pid, start in self.cpu_start.items()}
        busiest = sorted((v for pid, v in cpu.items() if pid != self.root.pid), reverse=True)
        return {
            "runner_mb": runner,
            "workers_mb": others[:WORKERS],
            "other_processes_mb": others[WORKERS:],
            "runner_cpu_s": cpu.get(self.root.pid, 0.0),
            "busiest_children_cpu_s": busiest[: WORKERS + 1],
        }


def feature_owner(pipeline: Any) -> tuple[list[str], np.ndarray]:
    features = list(pipeline.feature_names_in_)
    owners: list[str] = []
    for _name, transformer, columns in pipeline[0].transformers_:
        categories = getattr(transformer, "categories_", None)
        if categories is None:
            owners += list(columns)
        else:
            owners += [c for c, cats in zip(columns, categories, strict=True) for _ in cats]
    return features, np.array([features.index(c) for c in owners])


def run_job(data_dir: Path, rows: pd.DataFrame, layout: str) -> dict[str, Any]:
    database_url = f"sqlite:///{data_dir / 'candor.db'}"
    store = Store(data_dir, database_url)
    install_demos(store.registry, names=("loan",))
    store.close()
    app = create_app({"data_dir": data_dir, "database_url": database_url, "log_level": "warning"})
    context = app.extensions["candor"]
    token = context.store.keys.create("bench", ["explain"])[0]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    jobs = JobStore(context.store.sessions, data_dir)
    env = {
        **os.environ,
        "CANDOR_DATA_DIR": str(data_dir),
        "CANDOR_DATABASE_URL": database_url,
        "CANDOR_DASK_WORKERS": str(WORKERS),
        "CANDOR_LOG_LEVEL": "warning",
    }
    log = (data_dir / "runner.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "api.ops.cli", "jobs", "run"], cwd=ROOT, env=env, stdout=log, stderr=log
    )

    def submit(frame: pd.DataFrame) -> str:
        form = {
            "model": "loan",
            "version": "1",
            "kind": "shap",
            "options": json.dumps({"layout": layout}),
            "file": (io.BytesIO(parquet_bytes(frame)), "rows.parquet"),
        }
        answer = client.post("/v1/jobs", data=form, headers=headers, content_type="multipart/form-data")
        if answer.status_code != 202:
            raise RuntimeError(answer.get_data(as_text=True))
        return str(answer.get_json()["id"])

    def wait(job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = jobs.get(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if runner.poll() is not None:
                raise RuntimeError((data_dir / "runner.log").read_text())
            time.sleep(0.05)
        raise RuntimeError("the job did not finish in time")

    try:
        started = time.monotonic()
        wait(submit(rows.head(WORKERS * 2 * CHUNK_ROWS)), 300)  # a chunk or more for every worker
        warm_up_s = time.monotonic() - started
        watch = MemoryWatch(runner.pid)
        started = time.perf_counter()
        job_id = submit(rows)
        submitted = time.perf_counter()
        job = wait(job_id, 3600)
        finished = time.perf_counter()
        memory = watch.stop()
    finally:
        runner.terminate()
        runner.wait(60)
        log.close()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['status']}: {job['error']}")
    started_verify = time.perf_counter()
    verdict = verify_trail(context.store.audit_log)
    verify_s = time.perf_counter() - started_verify
    records = verdict["checked"] - WORKERS * 2 * CHUNK_ROWS  # less the warm-up job's records
    trail_bytes = stored_bytes(context.store, job_id)
    # A finished job's input is deleted: write the same rows again for the measurements apart.
    info = context.store.registry.resolve("loan", 1)
    with JobFiles(data_dir).staging() as staging:
        stream = io.BytesIO(parquet_bytes(rows))
        write_input(stream, target_schema(info.manifest), staging / "input.parquet", CHUNK_ROWS, len(rows))
        with context.store.sessions.begin() as session:
            job_inputs.store(session, job_id, job_inputs.encode(staging / "input.parquet"))
    diagnostics = {  # before the 100,000 result lines are held in this process (its GC would slow them)
        "compute_only_seconds": compute_only(data_dir, job_id, job["chunks_total"]),
        "chunk_store_seconds": chunk_store_floor(data_dir, job_id, job["chunks_total"]),
    }
    response = client.get(f"/v1/jobs/{job_id}/result", headers=headers)
    lines = [orjson.loads(line) for line in response.data.splitlines()]
    context.store.close()
    return {
        "diagnostics": diagnostics,
        "job_id": job_id,
        "seconds": finished - started,
        "submit_seconds": submitted - started,
        "runner_warm_up_seconds": warm_up_s,
        "memory": memory,
        "lines": lines,
        "records": records,
        "chain_ok": verdict["ok"],
        "trail_bytes": trail_bytes,
        "verify_seconds": verify_s,
        "result_bytes": len(response.data),
        "chunks": job["chunks_total"],
    }


def chunk_inputs(data_dir: Path, job_id: str, chunks: int) -> tuple[Any, list[Any], Any]:
    """What the runner sends its workers for the job's chunks: the limits, one task per chunk (its rows
    read from the job's stored input), and the shipped model."""
    from api.jobs.compute import ChunkTask, for_workers
    from api.settings import Settings
    from model_store.shipped import ShippedModel

    settings = Settings.load({"data_dir": data_dir, "database_url": f"sqlite:///{data_dir / 'candor.db'}"})
    store = Store(data_dir, settings.resolved_database_url)
    try:
        jobs = JobStore(store.sessions, data_dir)
        info = store.registry.resolve("loan", 1)
        shipped = ShippedModel(info, store.registry.files(info))
        tasks = [
            ChunkTask(
                job_id, n, n * CHUNK_ROWS, "loan", 1, "shap", {}, None, True, jobs.input_chunk(job_id, n), ""
            )
            for n in range(chunks)
        ]
    finally:
        store.close()
    return for_workers(settings), tasks, shipped


def compute_only(data_dir: Path, job_id: str, chunks: int) -> float:
    """Wall time of the job's chunks computed on a fresh 2-worker LocalCluster (warmed), nothing committed:
    the parallel part of a job."""
    from dataclasses import replace

    from distributed import Client, LocalCluster

    from api.jobs.compute import ShipModel, compute_chunk, warm_up

    settings, tasks, shipped = chunk_inputs(data_dir, job_id, chunks)
    plugin = ShipModel(job_id, shipped)
    tasks = [replace(task, model=plugin.name) for task in tasks]
    with (
        LocalCluster(n_workers=WORKERS, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(warm_up)
        client.register_plugin(plugin)
        warm = [client.submit(compute_chunk, settings, tasks[0], pure=False) for _ in range(WORKERS * 2)]
        for future in warm:
            future.result()
        started = time.perf_counter()
        futures = [client.submit(compute_chunk, settings, task, pure=False) for task in tasks]
        for future in futures:
            future.result()
            future.release()
        seconds = time.perf_counter() - started
    return seconds


def chunk_store_floor(data_dir: Path, job_id: str, chunks: int) -> float:
    """Wall time of storing ``chunks`` packed chunks of 1,000 of the job's records (new ids, so each chunk
    is its own) in a fresh database, one transaction per chunk, in this one process, then integrating them
    into the log's tree: the serial part of a job."""
    from api.jobs.compute import compute_chunk
    from model_store import audit_chunks
    from model_store.stored_form import StoredRecord

    settings, tasks, shipped = chunk_inputs(data_dir, job_id, 1)
    outcome = compute_chunk(settings, tasks[0], shipped)
    raw = audit_chunks.unpacked(outcome.packed.sha256, outcome.packed.size, outcome.packed.data)
    template = list(audit_chunks.lines(raw))
    packed = []
    for _ in range(chunks):
        fresh = new_explanation_id()
        entries = [line.replace(b'"id":"', b'"id":"' + fresh.encode() + b"-", 1) for line in template]
        packed.append(
            audit_chunks.pack(
                [
                    StoredRecord(e, "0" * 64, {**row, "id": f"{fresh}-{i}"}, {})
                    for i, (e, row) in enumerate(zip(entries, outcome.packed.rows, strict=True))
                ]
            )
        )
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp), f"sqlite:///{Path(tmp) / 'candor.db'}")
        started = time.perf_counter()
        for chunk in packed:
            with store.sessions.begin() as session:
                audit_chunks.write(session, chunk)
        store.audit_log.integrate()
        seconds = time.perf_counter() - started
        store.close()
    return seconds


def stored_bytes(store: Store, job_id: str) -> dict[str, float]:
    """The bytes a job's rows keep in the trail: its chunks (compressed) and its records' rows."""
    import sqlalchemy as sa

    with store.engine.connect() as connection:
        chunks = connection.execute(
            sa.text(
                "SELECT sum(length(c.data)), sum(j.rows) FROM job_chunks j JOIN audit_chunks c "
                "ON c.sha256 = j.sha256 WHERE j.job_id = :j"
            ),
            {"j": job_id},
        ).one()
        digests = [
            r[0]
            for r in connection.execute(
                sa.text("SELECT sha256 FROM job_chunks WHERE job_id = :j"), {"j": job_id}
            )
        ]
        rows = connection.execute(
            sa.text(
                "SELECT count(*), sum(length(id) + length(kind) + coalesce(length(model_name), 0) + 4 "
                "+ coalesce(length(key_id), 0) + length(status) + 8 + 26 + length(hash) + length(leaf_hash) "
                "+ 8 + 64 + 8 + 4) FROM explanation_records WHERE chunk_sha256 IN ("
                + ",".join(f"'{d}'" for d in digests)
                + ")"
            )
        ).one()
    count = int(chunks[1])
    return {
        "rows": count,
        "chunk_bytes_per_row": float(chunks[0]) / count,
        "record_row_bytes_per_row": float(rows[1]) / count,
        "per_row": (float(chunks[0]) + float(rows[1])) / count,
    }


def run_in_process(rows_path: Path, out: Path) -> dict[str, Any]:
    code = IN_PROCESS.format(root=str(ROOT), path=str(rows_path), out=str(out))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def job_matrix(lines: list[dict[str, Any]], features: list[str], layout: str) -> np.ndarray:
    if layout == "columnar":
        return np.array([line["result"]["attribution_values"] for line in lines])
    index = {f: i for i, f in enumerate(features)}
    out = np.zeros((len(lines), len(features)))
    for r, line in enumerate(lines):
        for item in line["result"]["attributions"]:
            out[r, index[item["feature"]]] = item["attribution"]
    return out


def run(n_rows: int, layout: str) -> dict[str, Any]:
    from api.demo import loan_model

    rows = make_rows(n_rows)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.parquet"
        rows.to_parquet(rows_path, index=False)
        local = run_in_process(rows_path, Path(tmp) / "values.npy")
        values = np.load(Path(tmp) / "values.npy")
        job = run_job(Path(tmp) / "data", rows, layout)
    _, pipeline, _ = loan_model()
    features, owner = feature_owner(pipeline)
    expected = np.zeros((values.shape[0], len(features)))
    np.add.at(expected.T, owner, values.T)
    lines = job.pop("lines")
    in_order = [line["row"] for line in lines] == list(range(n_rows))
    got = job_matrix(lines, features, layout)
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{d: metadata.version(d) for d in ("shap", "scikit-learn", "distributed", "numpy")},
        },
        "rows": n_rows,
        "layout": layout,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "in_process": local,
        "job": job,
        "ratio": local["seconds"] / job["seconds"],
        "rows_in_order": in_order,
        "max_abs_diff": float(np.abs(got - expected).max()),
    }


def markdown(r: dict[str, Any]) -> str:
    job, local = r["job"], r["in_process"]
    diag, trail = job["diagnostics"], job["trail_bytes"]
    met = "met" if r["ratio"] >= GOAL_RATIO else "missed"
    workers = ", ".join(f"{mb:.0f}" for mb in job["memory"]["workers_mb"])
    children_cpu = ", ".join(f"{s:.1f}" for s in job["memory"]["busiest_children_cpu_s"])
    return "\n".join(
        [
            f"Run {r['date']}, {r['machine']}; {r['rows']:,} rows, layout {r['layout']}, "
            f"{job['chunks']} chunks; 1-minute load average {r['load_average_1min']['before']:.2f} before, "
            f"{r['load_average_1min']['after']:.2f} after",
            "",
            "| Measure | In-process shap | Job (2-worker LocalCluster) |",
            "|---|---|---|",
            f"| Wall time | {local['seconds']:.2f} s | {job['seconds']:.2f} s "
            f"(upload and submission {job['submit_seconds']:.2f} s) |",
            f"| Rows/s | {r['rows'] / local['seconds']:,.0f} | {r['rows'] / job['seconds']:,.0f} |",
            f"| Ratio (in-process time / job time) | | **{r['ratio']:.2f}** (goal >= {GOAL_RATIO}: {met}) |",
            f"| Peak RSS | {local['peak_rss_mb']:.0f} MiB | runner {job['memory']['runner_mb']:.0f} MiB, "
            f"workers {workers} MiB |",
            "",
            f"CPU seconds while the job ran (user + system): runner {job['memory']['runner_cpu_s']:.1f}, its "
            f"busiest child processes {children_cpu} (the workers); in-process shap is one thread, its CPU "
            "time about its wall time.",
            f"Runner warm-up (a first 4,000-row job: cluster, imports, model load): "
            f"{job['runner_warm_up_seconds']:.1f} s. Audit records written: {job['records']:,}; log ok: "
            f"{job['chain_ok']} (verify {job['verify_seconds']:.1f} s). Trail bytes per row: "
            f"{trail['per_row']:.0f} (chunks {trail['chunk_bytes_per_row']:.0f}, "
            f"record rows {trail['record_row_bytes_per_row']:.0f}; goal <= {GOAL_BYTES_PER_ROW}). "
            "Result: "
            f"{job['result_bytes'] / 2**20:.0f} MiB of JSON lines, rows in order: {r['rows_in_order']}.",
            f"Max abs difference job vs in-process, per raw feature: {r['max_abs_diff']:.2e}",
            "",
            "Where the job's time goes (measured apart, same rows):",
            f"- the chunks computed on a warm 2-worker LocalCluster, nothing committed: "
            f"{diag['compute_only_seconds']:.2f} s (in-process time / this: "
            f"{local['seconds'] / diag['compute_only_seconds']:.2f})",
            f"- {r['rows']:,} records' chunks stored in a fresh database, one transaction per chunk, and "
            f"integrated into the log's tree, in one process: {diag['chunk_store_seconds']:.2f} s",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--layout", choices=["records", "columnar"], default="records")
    parser.add_argument("--quick", action="store_true", help="a smoke run over 10,000 rows")
    args = parser.parse_args(argv)
    result = run(10_000 if args.quick else args.rows, args.layout)
    print(markdown(result))
    out = ROOT / "bench" / "results" / ("jobs.json" if args.layout == "records" else "jobs-columnar.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    ok = (
        result["max_abs_diff"] <= MAX_ABS_DIFF
        and result["rows_in_order"]
        and result["job"]["records"] == result["rows"]
        and result["job"]["chain_ok"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

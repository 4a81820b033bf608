"""A fairness report over 100,000 ``loan`` rows (3 protected attributes, 200 bootstrap resamples) as a batch
job on a 2-worker LocalCluster, against fairlearn plus a plain re-scoring loop in one process.

Run from the repository root: ``.venv/bin/python bench/bench_fairness.py [--rows N]`` (or ``make bench``).

- Rows: the German credit applications resampled with replacement, seed 0, uploaded as Parquet.
- Job side: a throw-away data dir with ``loan`` registered, the real runner (``candor jobs run``,
  ``CANDOR_DASK_WORKERS=2``, chunks of 1,000 rows), warmed by a 4,000-row job; the job (``kind: fairness``,
  every protected attribute, ``resamples: 200``) is timed from the upload to ``succeeded``. It does what every
  job does (one result line and audit record per row: the row's groups, decision and flip-test moves) and its
  summary holds the report (group figures with intervals, flip rates).
- In-process side, in a fresh process, written the obvious way: the pipeline's ``predict_proba`` on all rows;
  per attribute fairlearn's ``MetricFrame`` (count, selection rate, mean probability) and
  ``demographic_parity_difference``/``ratio``, then 200 bootstrap resamples each recomputing them on the
  resampled rows; the flip test as a loop over attributes and values: copy the frame, set the column,
  re-score.
- Check: the job summary's selection rates, demographic-parity differences and flip rates equal the in-process
  figures (exit status 1 above 1e-9).
Prints a markdown table; writes ``bench/results/fairness.json``.
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
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.demo import AGE_BINS, LOAN_TARGET, PROTECTED, german_credit, install_demos  # noqa: E402
from api.http.app import create_app  # noqa: E402
from api.jobs.service import summary_of  # noqa: E402
from model_store.jobs import JobStore  # noqa: E402
from model_store.store import Store  # noqa: E402

GOAL_RATIO = 1.5
SEED = 0
WORKERS = 2
CHUNK_ROWS = 1000
RESAMPLES = 200
TOL = 1e-9

IN_PROCESS = """
import json, sys, time
import numpy as np, pandas as pd
from fairlearn.metrics import MetricFrame, count, selection_rate
from fairlearn.metrics import demographic_parity_difference, demographic_parity_ratio
sys.path.insert(0, {root!r})
from api.demo import loan_model
_, pipeline, _ = loan_model()
rows = pd.read_parquet({path!r})
attributes, bins, resamples = {attributes!r}, {bins!r}, {resamples!r}
labels = ["< 25", "25 to < 35", "35 to < 50", ">= 50"]
started = time.perf_counter()
good = list(pipeline.classes_).index("good")
probability = pipeline.predict_proba(rows)[:, good]
decision = (pipeline.predict(rows) == "good").astype(int)

def groups_of(frame, attribute):
    if attribute == "age_in_years":
        codes = np.searchsorted(bins, frame[attribute].astype(float), "right")
        return np.asarray(labels, dtype=object)[codes]
    return frame[attribute].astype(str).to_numpy(dtype=object)

def figures(groups, decision, probability):
    frame = MetricFrame(metrics={{"count": count, "selection_rate": selection_rate}},
                        y_true=decision, y_pred=decision, sensitive_features=groups)
    mean = MetricFrame(metrics=lambda t, p: float(np.mean(p)), y_true=decision, y_pred=probability,
                       sensitive_features=groups)
    return {{
        "selection_rate": frame.by_group["selection_rate"].to_dict(),
        "mean_probability": mean.by_group.to_dict(),
        "dpd": demographic_parity_difference(decision, decision, sensitive_features=groups),
        "dpr": demographic_parity_ratio(decision, decision, sensitive_features=groups),
    }}

report = {{}}
rng = np.random.default_rng(0)
for attribute in attributes:
    groups = groups_of(rows, attribute)
    point = figures(groups, decision, probability)
    draws = []
    for _ in range(resamples):
        chosen = rng.integers(0, len(rows), len(rows))
        draws.append(figures(groups[chosen], decision[chosen], probability[chosen])["dpd"])
    point["dpd_interval"] = np.percentile(draws, [2.5, 97.5]).tolist()
    report[attribute] = point
for attribute in attributes:  # the flip test: every row moved to every other group's value
    groups = groups_of(rows, attribute)
    values = sorted(set(groups)) if attribute != "age_in_years" else labels
    moves = flips = 0
    for value in values:
        if attribute == "age_in_years":
            inside = rows[attribute][groups == value]
            setting = float(np.median(inside)) if len(inside) else None
        else:
            setting = rows[attribute][groups == value].iloc[0]
        moved = rows.copy()
        moved[attribute] = setting
        after = (pipeline.predict(moved) == "good").astype(int)
        others = groups != value
        moves += int(others.sum())
        flips += int((after[others] != decision[others]).sum())
    report[attribute]["flip_rate"] = flips / moves
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "report": report}}, default=float))
"""


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def make_rows(n: int) -> pd.DataFrame:
    frame = german_credit().drop(columns=[LOAN_TARGET])
    return frame.sample(n=n, replace=True, random_state=SEED).reset_index(drop=True)


def run_job(data_dir: Path, rows: pd.DataFrame) -> dict[str, Any]:
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
            "kind": "fairness",
            "options": json.dumps({"resamples": RESAMPLES, "min_group_size": 1}),
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
        wait(submit(rows.head(WORKERS * 2 * CHUNK_ROWS)), 600)
        started = time.perf_counter()
        job = wait(submit(rows), 3600)
        seconds = time.perf_counter() - started
    finally:
        runner.terminate()
        runner.wait(60)
        log.close()
    context.store.close()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['status']}: {job.get('error')}")
    print(f"job: {seconds:.1f} s", file=sys.stderr)
    return {"seconds": seconds, "summary": summary_of(job)}


def in_process(path: Path) -> dict[str, Any]:
    attributes = sorted(PROTECTED)
    code = IN_PROCESS.format(
        root=str(ROOT), path=str(path), attributes=attributes, bins=AGE_BINS, resamples=RESAMPLES
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def max_difference(job: dict[str, Any], direct: dict[str, Any]) -> float:
    """The largest difference between the job summary's point figures and the in-process ones."""
    worst = 0.0
    for section in job["fairness"]["attributes"]:
        want = direct[section["attribute"]]
        for group in section["groups"]:
            worst = max(worst, abs(group["selection_rate"] - want["selection_rate"][group["group"]]))
            worst = max(worst, abs(group["mean_probability"] - want["mean_probability"][group["group"]]))
        worst = max(worst, abs(section["between"]["demographic_parity_difference"] - want["dpd"]))
        worst = max(worst, abs(section["flip_test"]["flip_rate"] - want["flip_rate"]))
    return worst


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.parquet"
        rows.to_parquet(path, index=False)
        load_before = os.getloadavg()[0]
        job = run_job(Path(tmp) / "data", rows)
        direct = in_process(path)
        load_after = os.getloadavg()[0]
    difference = max_difference(job["summary"], direct["report"])
    ratio = direct["seconds"] / job["seconds"]
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": args.rows,
        "resamples": RESAMPLES,
        "load_before_after": [load_before, load_after],
        "job_seconds": job["seconds"],
        "in_process_seconds": direct["seconds"],
        "ratio": ratio,
        "goal": GOAL_RATIO,
        "max_abs_difference": difference,
        "job_summary": job["summary"],
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fairness.json").write_text(json.dumps(result, indent=2))
    print("| Rows | Resamples | In-process (fairlearn + loop) | Job | Ratio (goal >= 1.5) | Max abs diff |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.rows:,} | {RESAMPLES} | {direct['seconds']:.1f} s | {job['seconds']:.1f} s | "
        f"{ratio:.2f} | {difference:.1e} |"
    )
    return 0 if difference <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())

"""TreeSHAP over 100,000 ``loan`` rows as a batch job: on an external Dask cluster of 2 worker machines
against the runner's own 2-worker LocalCluster, in one run.

Run from the repository root, as root for the network namespaces:
``.venv/bin/python bench/bench_cluster.py [--rows N] [--repeats N] [--quick]``.

- Rows: as ``bench_jobs.py`` (German credit applications resampled with replacement, seed 0), uploaded as
  one Parquet file to ``POST /v1/jobs`` (the Flask app in this process); chunks of 1,000 rows.
- Two sides, each with its own throw-away data dir (SQLite, ``loan`` registered) and its own real runner
  (``candor jobs run`` as a process): *local*, ``CANDOR_DASK_WORKERS=2`` (the runner's LocalCluster, as
  ``bench_jobs.py``); *external*, ``CANDOR_DASK_SCHEDULER`` naming a ``dask scheduler`` with two ``dask
  worker`` processes started by ``tests/dask_processes.py`` (own empty dirs and environments, the data
  dirs hidden, each worker in its own network namespace where the machine allows). Each runner is warmed
  by a 4,000-row job; then the timed jobs alternate between the sides (``--repeats`` each), each timed
  from the upload to ``succeeded``.
- Bytes sent to the workers per job: in netns mode, what the host side of each worker's link carried
  during the job (``/sys/class/net/<link>/statistics/tx_bytes``: the model, the chunks' rows, Dask's own
  messages), next to what the runner counted and logged (the model version's files times the workers, and
  the rows).
- Checks: every job succeeded with every row once and in order; 200 rows of the last job of each side
  equal shap called directly (summed per raw feature, 1e-6); the log verifies. Exit status 1 otherwise.
Prints a markdown table; writes ``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_jobs import CHUNK_ROWS, WORKERS, feature_owner, make_rows, parquet_bytes  # noqa: E402
from dask_processes import DaskProcesses  # noqa: E402

from api.demo import install_demos, loan_model  # noqa: E402
from api.http.app import create_app  # noqa: E402
from model_store.audit_blobs import verify_trail  # noqa: E402
from model_store.jobs import JobStore  # noqa: E402
from model_store.shipped import ShippedModel  # noqa: E402
from model_store.store import Store  # noqa: E402

GOAL_RATIO = 0.9
MAX_ABS_DIFF = 1e-6
CHECKED_ROWS = 200


class Side:
    """A data dir with ``loan`` registered, its app, and a runner process on the given Dask settings."""

    def __init__(self, name: str, data_dir: Path, dask_env: dict[str, str]) -> None:
        self.name, self.data_dir = name, data_dir
        database_url = f"sqlite:///{data_dir / 'candor.db'}"
        store = Store(data_dir, database_url)
        install_demos(store.registry, names=("loan",))
        store.close()
        self.app = create_app({"data_dir": data_dir, "database_url": database_url, "log_level": "warning"})
        self.context = self.app.extensions["candor"]
        self.client = self.app.test_client()
        token = self.context.store.keys.create("bench", ["explain"])[0]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.jobs = JobStore(self.context.store.sessions, data_dir)
        env = {
            **os.environ,
            "CANDOR_DATA_DIR": str(data_dir),
            "CANDOR_DATABASE_URL": database_url,
            "CANDOR_LOG_LEVEL": "info",  # the runner logs the bytes each job sent to the workers
            **dask_env,
        }
        self.log_path = data_dir / "runner.log"
        with self.log_path.open("wb") as log:
            self.runner = subprocess.Popen(
                [sys.executable, "-m", "api.ops.cli", "jobs", "run"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=log,
            )

    def model_bytes(self) -> int:
        registry = self.context.store.registry
        info = registry.resolve("loan", 1)
        return ShippedModel(info, registry.files(info)).size

    def submit(self, frame: pd.DataFrame) -> str:
        form = {
            "model": "loan",
            "version": "1",
            "kind": "shap",
            "file": (io.BytesIO(parquet_bytes(frame)), "rows.parquet"),
        }
        answer = self.client.post(
            "/v1/jobs", data=form, headers=self.headers, content_type="multipart/form-data"
        )
        if answer.status_code != 202:
            raise RuntimeError(answer.get_data(as_text=True))
        return str(answer.get_json()["id"])

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.jobs.get(job_id)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                if job["status"] != "succeeded":
                    raise RuntimeError(f"{self.name}: job {job['status']}: {job['error']}")
                return job
            if self.runner.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-4000:])
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: the job did not finish in time")

    def sent(self, job_id: str) -> dict[str, int] | None:
        """What the runner counted as sent to the workers for the job (its log line), if it logged it."""
        found = re.search(
            rf"job {job_id}: sent (\d+) bytes to the workers \(the model, (\d+) bytes, to each of (\d+); "
            r"rows (\d+) bytes\)",
            self.log_path.read_text(errors="replace"),
        )
        if found is None:
            return None
        total, model, workers, rows = (int(g) for g in found.groups())
        return {"total": total, "model": model, "workers": workers, "rows": rows}

    def lines(self, job_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/jobs/{job_id}/result", headers=self.headers)
        return [orjson.loads(line) for line in response.data.splitlines()]

    def close(self) -> None:
        self.runner.terminate()
        self.runner.wait(60)
        self.context.store.close()


def timed_job(side: Side, rows: pd.DataFrame, machines: DaskProcesses | None) -> dict[str, Any]:
    before = machines.bytes_to_workers() if machines else {}
    started = time.perf_counter()
    job_id = side.submit(rows)
    submitted = time.perf_counter()
    job = side.wait(job_id, 3600)
    seconds = time.perf_counter() - started
    after = machines.bytes_to_workers() if machines else {}
    sent = {str(i): after[i] - before[i] for i in after if after[i] is not None and before[i] is not None}
    return {
        "job_id": job_id,
        "seconds": seconds,
        "submit_seconds": submitted - started,
        "rows_per_s": len(rows) / seconds,
        "chunks": job["chunks_total"],
        "rows_done": job["rows_done"],
        "bytes_to_workers": sent or None,
        "runner_counted": side.sent(job_id),
    }


def check(side: Side, job_id: str, rows: pd.DataFrame) -> dict[str, Any]:
    """Every row once and in order; a sample of rows against shap called directly; the log verifies."""
    import shap

    lines = side.lines(job_id)
    in_order = [line["row"] for line in lines] == list(range(len(rows)))
    picked = np.random.default_rng(0).choice(len(rows), size=min(CHECKED_ROWS, len(rows)), replace=False)
    _, pipeline, _ = loan_model()
    features, owner = feature_owner(pipeline)
    values = np.asarray(
        shap.TreeExplainer(pipeline[-1]).shap_values(pipeline[:-1].transform(rows.iloc[picked]))
    )
    expected = np.zeros((len(picked), len(features)))
    np.add.at(expected.T, owner, values.T)
    index = {f: i for i, f in enumerate(features)}
    got = np.zeros_like(expected)
    for r, row in enumerate(picked):
        for item in lines[row]["result"]["attributions"]:
            got[r, index[item["feature"]]] = item["attribution"]
    return {
        "rows_in_order": in_order,
        "all_ok": all(line["status"] == "ok" for line in lines),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "log_ok": bool(verify_trail(side.context.store.audit_log)["ok"]),
    }


@contextlib.contextmanager
def sides(tmp: Path) -> Iterator[tuple[Side, Side, DaskProcesses]]:
    with DaskProcesses(hidden=[tmp], n_workers=WORKERS) as machines:
        local = external = None
        try:
            local = Side("local", tmp / "local", {"CANDOR_DASK_WORKERS": str(WORKERS)})
            external = Side("external", tmp / "external", {"CANDOR_DASK_SCHEDULER": machines.address})
            yield local, external, machines
        finally:
            for side in (external, local):
                if side is not None:
                    side.close()


def run(n_rows: int, repeats: int) -> dict[str, Any]:
    rows = make_rows(n_rows)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="candor-bench-cluster-") as tmp:
        (Path(tmp) / "local").mkdir()
        (Path(tmp) / "external").mkdir()
        with sides(Path(tmp)) as (local, external, machines):
            warm_up = {}
            for side in (local, external):
                started = time.perf_counter()
                side.wait(side.submit(rows.head(WORKERS * 2 * CHUNK_ROWS)), 600)
                warm_up[side.name] = time.perf_counter() - started
            runs: dict[str, list[dict[str, Any]]] = {"local": [], "external": []}
            for _ in range(repeats):
                runs["local"].append(timed_job(local, rows, None))
                runs["external"].append(timed_job(external, rows, machines))
            checks = {
                side.name: check(side, runs[side.name][-1]["job_id"], rows) for side in (local, external)
            }
            model_bytes = external.model_bytes()
            mode = machines.mode
    best = {name: max(r["rows_per_s"] for r in results) for name, results in runs.items()}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{d: metadata.version(d) for d in ("shap", "scikit-learn", "distributed", "numpy")},
        },
        "rows": n_rows,
        "chunk_rows": CHUNK_ROWS,
        "workers": WORKERS,
        "network_mode": mode,
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "warm_up_seconds": warm_up,
        "runs": runs,
        "best_rows_per_s": best,
        "ratio": best["external"] / best["local"],
        "model_bytes": model_bytes,
        "checks": checks,
    }


def markdown(r: dict[str, Any]) -> str:
    met = "met" if r["ratio"] >= GOAL_RATIO else "missed"
    rows = []
    for name in ("local", "external"):
        for n, job in enumerate(r["runs"][name], 1):
            sent = job["bytes_to_workers"]
            wire = "n/a (loopback)" if not sent else " + ".join(f"{v / 2**20:.2f}" for v in sent.values())
            counted = job["runner_counted"]
            count = (
                f"{counted['model'] / 2**20:.2f} x {counted['workers']} + {counted['rows'] / 2**20:.2f} = "
                f"{counted['total'] / 2**20:.2f} MiB"
                if counted
                else "not logged"
            )
            rows.append(
                f"| {name} #{n} | {job['seconds']:.2f} s (upload {job['submit_seconds']:.2f} s) | "
                f"{job['rows_per_s']:,.0f} | {job['chunks']} | {wire if name == 'external' else 'n/a'} | "
                f"{count} |"
            )
    external_sent = [
        sum(j["bytes_to_workers"].values()) for j in r["runs"]["external"] if j["bytes_to_workers"]
    ]
    model = r["model_bytes"]
    per_task = r["runs"]["external"][0]["chunks"] * model
    return "\n".join(
        [
            f"Run {r['date']}, {r['machine']}; {r['rows']:,} rows in chunks of {r['chunk_rows']:,}, "
            f"{r['workers']} workers; network mode {r['network_mode']}; 1-minute load average "
            f"{r['load_average_1min']['before']:.2f} before, {r['load_average_1min']['after']:.2f} after",
            "",
            "| Job | Wall time | Rows/s | Chunks | MiB on each worker's link "
            "| Runner's count: model x workers + rows |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Best rows/s: local {r['best_rows_per_s']['local']:,.0f}, external "
            f"{r['best_rows_per_s']['external']:,.0f}; ratio external / local **{r['ratio']:.2f}** "
            f"(goal >= {GOAL_RATIO}: {met}).",
            f"The model version's files: {model / 2**10:.0f} KiB, x {r['workers']} workers = "
            f"{r['workers'] * model / 2**20:.2f} MiB; bytes on the workers' links per external job: "
            + (", ".join(f"{b / 2**20:.2f} MiB" for b in external_sent) or "n/a (loopback mode)")
            + f" (the model sent per task would be {per_task / 2**20:.1f} MiB).",
            "Warm-up (a first 4,000-row job per runner): "
            + ", ".join(f"{k} {v:.1f} s" for k, v in r["warm_up_seconds"].items()),
            f"Checks: {json.dumps(r['checks'])}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 rows, 1 repeat")
    args = parser.parse_args(argv)
    result = run(10_000 if args.quick else args.rows, 1 if args.quick else args.repeats)
    print(markdown(result))
    out = ROOT / "bench" / "results" / "cluster.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    ok = all(
        c["rows_in_order"] and c["all_ok"] and c["log_ok"] and c["max_abs_diff"] <= MAX_ABS_DIFF
        for c in result["checks"].values()
    ) and all(j["rows_done"] == result["rows"] for runs in result["runs"].values() for j in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

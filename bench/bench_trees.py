"""XGBoost TreeSHAP through the Candor API (real gunicorn) against the user's own in-process path, in one run.

Run from the repository root: ``.venv/bin/python bench/bench_trees.py [--quick]`` (or ``make bench``).

- The model: the German credit data, a OneHotEncoder ColumnTransformer and an ``XGBClassifier`` (100 trees,
  depth 3, seeded) in a scikit-learn Pipeline, stored with skops, registered over HTTP as ``loan-xgb-pipe``.
- In-process, what a user writes: ``X = pipeline[:-1].transform(rows)``, then
  ``booster.predict(DMatrix(X), pred_contribs=True)`` and the one-hot columns summed per raw feature.
- API: gunicorn with ``api/ops/gunicorn_conf.py`` (1 worker, 1 thread; ``CANDOR_BOOSTER_THREADS`` the
  cores, as the README advises for one busy request thread), one keep-alive session, ``columnar`` layout
  for the 1,000-row calls. (a) one raw row per call, N calls: p50/p95; (b) 1,000 rows per call, R
  calls: throughput from the median. The two sides alternate call by call.
The API's attributions are checked against the in-process ones (exit status 1 above 1e-5: float32).
Prints a markdown table; writes ``bench/results/trees.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import BenchServer, timed  # noqa: E402

from api.demo import LOAN_TARGET, german_credit, loan_manifest  # noqa: E402
from model_store.reference import to_parquet  # noqa: E402
from model_store.safe_load import dump_skops  # noqa: E402

NAME = "loan-xgb-pipe"
PATH = f"/v1/models/{NAME}/versions/1/explain/shap"
GOAL_LATENCY_RATIO = 1.5
GOAL_THROUGHPUT_RATIO = 0.8
MAX_ABS_DIFF = 1e-5


class InProcess:
    """The fitted pipeline, its booster, and the one-hot columns' raw features."""

    def __init__(self, data: pd.DataFrame) -> None:
        features = data.drop(columns=[LOAN_TARGET])
        categorical = [c for c in features.columns if features[c].dtype == object]
        numeric = [c for c in features.columns if c not in categorical]
        prep = ColumnTransformer(
            [
                ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
                ("numeric", "passthrough", numeric),
            ]
        )
        model = xgboost.XGBClassifier(n_estimators=100, max_depth=3, learning_rate=0.1, random_state=0)
        labels = (data[LOAN_TARGET] == "good").astype(int)
        self.pipeline = Pipeline([("prep", prep), ("model", model)]).fit(features, labels)
        self.booster = self.pipeline[-1].get_booster()
        self.features = list(features.columns)
        owners = [
            c for c, cats in zip(categorical, prep.transformers_[0][1].categories_, strict=True) for _ in cats
        ]
        self.owner = np.array([self.features.index(c) for c in owners + numeric])

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        encoded = self.pipeline[:-1].transform(rows)
        contributions = self.booster.predict(xgboost.DMatrix(encoded), pred_contribs=True)
        out = np.zeros((len(rows), len(self.features)))
        np.add.at(out.T, self.owner, contributions[:, :-1].T)
        return out


def register(server: BenchServer, local: InProcess, data: pd.DataFrame) -> None:
    manifest = loan_manifest(data)
    manifest.update({"name": NAME, "classes": ["0", "1"], "favourable_class": "1"})
    manifest["description"] = "German credit; one-hot encoding and XGBClassifier in a Pipeline (bench)."
    response = requests.post(
        f"{server.base}/v1/models/{NAME}/versions",
        headers={"Authorization": f"Bearer {server.token}"},
        files={
            "manifest": (None, json.dumps(manifest)),
            "artifact": ("model.skops", dump_skops(local.pipeline)),
            "reference": ("reference.parquet", to_parquet(data.drop(columns=[LOAN_TARGET]))),
        },
        timeout=60,
    )
    if response.status_code != 201:
        raise RuntimeError(f"registration failed: {response.status_code} {response.text[:2000]}")


def api_values(answer: dict[str, Any], features: list[str]) -> np.ndarray:
    order = answer["output"]["feature_order"]
    matrix = np.array([r["attribution_values"] for r in answer["results"]])
    return matrix[:, [order.index(f) for f in features]]


def run(n_single: int, n_bulk: int, booster_threads: int) -> dict[str, Any]:
    data = german_credit()
    frame = data.drop(columns=[LOAN_TARGET])
    records = json.loads(frame.to_json(orient="records"))
    local = InProcess(data)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CANDOR_BOOSTER_THREADS": str(booster_threads)}
        server = BenchServer(Path(tmp), env, scopes=("explain", "models:write"), demos=())
        try:
            register(server, local, data)
            explain = lambda body: server.post(PATH, body)  # noqa: E731
            answer = explain({"instances": records, "layout": "columnar"})  # warm-up and correctness
            worst = float(np.abs(api_values(answer, local.features) - local(frame)).max())
            implementation = answer["method"]["params"]["implementation"]
            single: dict[str, list[float]] = {"in_process": [], "api": []}
            for i in range(n_single):
                row = i % len(records)
                pair = [
                    ("in_process", local, frame.iloc[[row]]),
                    ("api", explain, {"instances": [records[row]], "layout": "columnar"}),
                ]
                for key, fn, arg in pair if i % 2 == 0 else reversed(pair):
                    single[key].append(timed(fn, arg)[0])
            bulk: dict[str, list[float]] = {"in_process": [], "api": []}
            for i in range(n_bulk):
                pair = [
                    ("in_process", local, frame),
                    ("api", explain, {"instances": records, "layout": "columnar"}),
                ]
                for key, fn, arg in pair if i % 2 == 0 else reversed(pair):
                    bulk[key].append(timed(fn, arg)[0])
            server_ms = explain({"instances": records, "layout": "columnar"})["timing_ms"]
            one_row_ms = explain({"instances": records[:1], "layout": "columnar"})["timing_ms"]
        finally:
            server.stop()
    p50 = {k: statistics.median(v) * 1000 for k, v in single.items()}
    p95 = {k: float(np.percentile(v, 95)) * 1000 for k, v in single.items()}
    rows_per_s = {k: len(records) / statistics.median(v) for k, v in bulk.items()}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "booster_threads": booster_threads,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{d: metadata.version(d) for d in ("xgboost-cpu", "scikit-learn", "gunicorn")},
        },
        "implementation": implementation,
        "calls": {"single_row": n_single, "bulk": n_bulk},
        "single_row_ms": {"p50": p50, "p95": p95, "ratio_p50": p50["api"] / p50["in_process"]},
        "bulk_rows_per_s": rows_per_s,
        "bulk_ratio": rows_per_s["api"] / rows_per_s["in_process"],
        "server_timing_ms": {"1000_rows": server_ms, "1_row": one_row_ms},
        "max_abs_diff": worst,
    }


def markdown(r: dict[str, Any]) -> str:
    s, b = r["single_row_ms"], r["bulk_rows_per_s"]
    latency = "met" if s["ratio_p50"] <= GOAL_LATENCY_RATIO else "missed"
    throughput = "met" if r["bulk_ratio"] >= GOAL_THROUGHPUT_RATIO else "missed"
    return "\n".join(
        [
            f"Run {r['date']}, {r['machine']}, API implementation: {r['implementation']}, "
            f"CANDOR_BOOSTER_THREADS={r['booster_threads']}",
            "",
            "| Measure | In-process | API | Ratio | Goal |",
            "|---|---|---|---|---|",
            f"| 1 row, p50 latency | {s['p50']['in_process']:.2f} ms | {s['p50']['api']:.2f} ms | "
            f"{s['ratio_p50']:.2f} | <= {GOAL_LATENCY_RATIO} ({latency}) |",
            f"| 1 row, p95 latency | {s['p95']['in_process']:.2f} ms | {s['p95']['api']:.2f} ms | "
            f"{s['p95']['api'] / s['p95']['in_process']:.2f} | |",
            f"| 1,000 rows, columnar, median | {b['in_process']:.0f} rows/s | {b['api']:.0f} rows/s | "
            f"{r['bulk_ratio']:.2f} | >= {GOAL_THROUGHPUT_RATIO} ({throughput}) |",
            "",
            f"Server-side timing (ms): 1,000 rows {r['server_timing_ms']['1000_rows']}, "
            f"1 row {r['server_timing_ms']['1_row']}",
            f"Max abs difference API vs in-process, per raw feature: {r['max_abs_diff']:.2e}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 30 single-row calls, 3 bulk calls (full: 300 and 20)",
    )
    parser.add_argument(
        "--booster-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="the server's CANDOR_BOOSTER_THREADS (default: the cores, as for its one worker of one thread)",
    )
    args = parser.parse_args(argv)
    result = run(30, 3, args.booster_threads) if args.quick else run(300, 20, args.booster_threads)
    print(markdown(result))
    out = ROOT / "bench" / "results" / "trees.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0 if result["max_abs_diff"] <= MAX_ABS_DIFF else 1


if __name__ == "__main__":
    sys.exit(main())

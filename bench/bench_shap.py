"""TreeSHAP on the ``loan`` demo: the Candor API (real gunicorn) against shap called in-process, in one run.

Run from the repository root: ``.venv/bin/python bench/bench_shap.py [--quick]`` (or ``make bench``).

- In-process, what a user would write: the fitted pipeline, ``shap.TreeExplainer(model)`` built once, then per
  call ``pipeline[:-1].transform(rows_frame)`` and ``explainer.shap_values(X)``.
- API: gunicorn with ``api/ops/gunicorn_conf.py`` (1 worker, 1 thread) on a free loopback port, one keep-alive
  ``requests.Session``; each call encodes the body, posts it and decodes the answer with orjson.
- (a) one raw row per call, N calls, rows cycled: p50/p95 latency of both, and of the same row sent with a
  new ``Idempotency-Key`` then again with it (the retry is answered from the record, checked); (b) 1,000
  rows in one call, R calls: throughput from the median time, for the default ``records`` and the compact
  ``columnar`` layout.
The two sides alternate call by call; the benchmark process's own garbage collector is paused while a
call is timed (as timeit does), so its collections land on neither side. The API's attributions are checked
against the in-process values summed per raw feature (exit status 1 above 1e-6). Prints a markdown table;
writes ``bench/results/shap.json``.
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
import shap

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import BenchServer, timed  # noqa: E402

from api.demo import LOAN_TARGET, german_credit, loan_model  # noqa: E402

PATH = "/v1/models/loan/versions/1/explain/shap"
GOAL_LATENCY_RATIO = 1.5
GOAL_THROUGHPUT_RATIO = 0.8
MAX_ABS_DIFF = 1e-6


class InProcess:
    """The pipeline, one TreeExplainer, and the encoded-to-raw column map (for the correctness check only)."""

    def __init__(self) -> None:
        _, self.pipeline, _ = loan_model()  # deterministic: the same model `candor demo install` registers
        self.explainer = shap.TreeExplainer(self.pipeline[-1])
        self.features = list(self.pipeline.feature_names_in_)
        owners: list[str] = []
        for _name, transformer, columns in self.pipeline[0].transformers_:
            categories = getattr(transformer, "categories_", None)
            if categories is None:
                owners += list(columns)
            else:
                owners += [c for c, cats in zip(columns, categories, strict=True) for _ in cats]
        self.owner = np.array([self.features.index(c) for c in owners])

    def __call__(self, rows: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.explainer.shap_values(self.pipeline[:-1].transform(rows)))

    def per_raw_feature(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros((values.shape[0], len(self.features)))
        np.add.at(out.T, self.owner, values.T)
        return out


class Server(BenchServer):
    def explain(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.post(PATH, body)

    def explain_keyed(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        return self.post(PATH, body, {"Idempotency-Key": key})


def api_values(answer: dict[str, Any], features: list[str]) -> np.ndarray:
    """The API's attributions as (rows, raw features) in model order, from either layout."""
    if answer["method"]["params"]["layout"] == "columnar":
        order = answer["output"]["feature_order"]
        matrix = np.array([r["attribution_values"] for r in answer["results"]])
        return matrix[:, [order.index(f) for f in features]]
    return np.array(
        [
            [{a["feature"]: a["attribution"] for a in r["attributions"]}[f] for f in features]
            for r in answer["results"]
        ]
    )


def run(n_single: int, n_bulk: int) -> dict[str, Any]:
    frame = german_credit().drop(columns=[LOAN_TARGET])
    records = json.loads(frame.to_json(orient="records"))  # JSON-native values, as a client would send
    local = InProcess()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            worst = 0.0
            for layout in ("records", "columnar"):  # warm-up and correctness on all 1,000 rows
                answer = server.explain({"instances": records, "layout": layout})
                expected = local.per_raw_feature(local(frame))
                worst = max(worst, float(np.abs(api_values(answer, local.features) - expected).max()))
            single_local: list[float] = []
            single_api: list[float] = []
            keyed: dict[str, list[float]] = {"first": [], "retry": []}
            for i in range(n_single):
                row = i % len(records)
                pair = [
                    (single_local, local, frame.iloc[[row]]),
                    (single_api, server.explain, {"instances": [records[row]]}),
                ]
                for sink, fn, arg in pair if i % 2 == 0 else reversed(pair):
                    sink.append(timed(fn, arg)[0])
                body, key = {"instances": [records[row]]}, f"bench-{i}"  # a new key, then its retry
                seconds, first = timed(server.explain_keyed, body, key)
                keyed["first"].append(seconds)
                seconds, again = timed(server.explain_keyed, body, key)
                keyed["retry"].append(seconds)
                if again["id"] != first["id"] or server.last_headers.get("Idempotent-Replayed") != "true":
                    raise RuntimeError(
                        "a retry with the same Idempotency-Key was not answered from its record"
                    )
            bulk: dict[str, list[float]] = {"in_process": [], "records": [], "columnar": []}
            for i in range(n_bulk):
                calls = [
                    ("in_process", local, frame),
                    ("records", server.explain, {"instances": records}),
                    ("columnar", server.explain, {"instances": records, "layout": "columnar"}),
                ]
                for key, fn, arg in calls if i % 2 == 0 else reversed(calls):
                    bulk[key].append(timed(fn, arg)[0])
            server_ms = server.explain({"instances": records})["timing_ms"]
        finally:
            server.stop()
    p50 = {k: statistics.median(v) * 1000 for k, v in (("in_process", single_local), ("api", single_api))}
    p95 = {
        k: float(np.percentile(v, 95)) * 1000 for k, v in (("in_process", single_local), ("api", single_api))
    }
    keyed_p50 = {k: statistics.median(v) * 1000 for k, v in keyed.items()}
    rows_per_s = {k: len(records) / statistics.median(v) for k, v in bulk.items()}
    best_rows_per_s = {k: len(records) / min(v) for k, v in bulk.items()}
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **{d: metadata.version(d) for d in ("shap", "scikit-learn", "gunicorn")},
        },
        "calls": {"single_row": n_single, "bulk": n_bulk},
        "single_row_ms": {"p50": p50, "p95": p95, "ratio_p50": p50["api"] / p50["in_process"]},
        "single_row_keyed_p50_ms": keyed_p50,
        "bulk_rows_per_s": rows_per_s,
        "bulk_ratio": {k: rows_per_s[k] / rows_per_s["in_process"] for k in ("records", "columnar")},
        "bulk_best_rows_per_s": best_rows_per_s,
        "bulk_best_ratio": {
            k: best_rows_per_s[k] / best_rows_per_s["in_process"] for k in ("records", "columnar")
        },
        "server_timing_ms_1000_rows": server_ms,
        "max_abs_diff": worst,
    }


def markdown(r: dict[str, Any]) -> str:
    s, b, ratio, best = r["single_row_ms"], r["bulk_rows_per_s"], r["bulk_ratio"], r["bulk_best_rows_per_s"]
    k = r["single_row_keyed_p50_ms"]
    latency = "met" if s["ratio_p50"] <= GOAL_LATENCY_RATIO else "missed"
    met = {k: "met" if v >= GOAL_THROUGHPUT_RATIO else "missed" for k, v in ratio.items()}
    return "\n".join(
        [
            f"Run {r['date']}, {r['machine']}",
            "",
            "| Measure | In-process | API | Ratio | Goal |",
            "|---|---|---|---|---|",
            f"| 1 row, p50 latency | {s['p50']['in_process']:.2f} ms | {s['p50']['api']:.2f} ms | "
            f"{s['ratio_p50']:.2f} | <= {GOAL_LATENCY_RATIO} ({latency}) |",
            f"| 1 row, p95 latency | {s['p95']['in_process']:.2f} ms | {s['p95']['api']:.2f} ms | "
            f"{s['p95']['api'] / s['p95']['in_process']:.2f} | |",
            f"| 1 row with an Idempotency-Key, p50: first / retry | {s['p50']['in_process']:.2f} ms | "
            f"{k['first']:.2f} / {k['retry']:.2f} ms | {k['first'] / s['p50']['in_process']:.2f} / "
            f"{k['retry'] / s['p50']['in_process']:.2f} | |",
            *[
                f"| 1,000 rows, {layout}, median | {b['in_process']:.0f} rows/s | {b[layout]:.0f} rows/s | "
                f"{ratio[layout]:.2f} | >= {GOAL_THROUGHPUT_RATIO} ({met[layout]}) |"
                for layout in ("records", "columnar")
            ],
            *[
                f"| 1,000 rows, {layout}, best | {best['in_process']:.0f} rows/s | {best[layout]:.0f} rows/s"
                f" | {r['bulk_best_ratio'][layout]:.2f} | |"
                for layout in ("records", "columnar")
            ],
            "",
            f"Server-side timing of one 1,000-row call (ms): {r['server_timing_ms_1000_rows']}",
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
    args = parser.parse_args(argv)
    result = run(30, 3) if args.quick else run(300, 20)
    print(markdown(result))
    out = ROOT / "bench" / "results" / "shap.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return 0 if result["max_abs_diff"] <= MAX_ABS_DIFF else 1


if __name__ == "__main__":
    sys.exit(main())

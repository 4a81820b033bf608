"""How fast over-cap requests are refused (issue 6: "rejected with 413/422 in well under 200 ms, before any
model work"), through the real gunicorn on loopback.

For each cap, one warm-up then ``--repeat`` requests over a keep-alive session; the table gives the status and
the p50/p95/max wall time the client saw. A within-cap SHAP request for one row is the reference point.

Run: ``.venv/bin/python bench/bench_rejections.py [--repeat 50]``; results in bench/results/rejections.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from harness import ROOT, BenchServer

LOAN = "/v1/models/loan/versions/production"
ROW = json.loads((ROOT / "tests" / "data" / "loan_shap_request.json").read_text())["instances"][0]
CASES: list[tuple[str, str, Any]] = [
    ("within caps: SHAP, 1 row (reference)", "explain/shap", {"instances": [ROW]}),
    ("instances over max_instances (5,001 rows)", "explain/shap", {"instances": [ROW] * 5001}),
    ("body over max_body_bytes (17 MB)", "explain/shap", None),
    (
        "max_evals over cap",
        "explain/shap",
        {"instances": [ROW], "algorithm": "permutation", "max_evals": 5000},
    ),
    (
        "permutation SHAP work over cap (500 rows)",
        "explain/shap",
        {"instances": [ROW] * 500, "algorithm": "permutation", "max_evals": 4096, "background_rows": 200},
    ),
    ("counterfactual instances over cap (51)", "explain/counterfactuals", {"instances": [ROW] * 51}),
    (
        "counterfactual budget_ms over cap",
        "explain/counterfactuals",
        {"instances": [ROW], "budget_ms": 600000},
    ),
    ("total_cfs over cap", "explain/counterfactuals", {"instances": [ROW], "total_cfs": 21}),
    ("text over max_text_chars (1 MB)", "explain/attributions", {"instances": [{"text": "pain " * 200_000}]}),
    ("n_steps over cap", "explain/attributions", {"instances": [{"text": "pain"}], "n_steps": 5000}),
]


def body_of(payload: Any) -> bytes:
    if payload is None:
        return b'{"instances": [' + b'{"x": "' + b"a" * (17 * 1024 * 1024) + b'"}]}'
    return orjson.dumps(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = BenchServer(Path(tmp), {"CANDOR_RATE_LIMIT": "off"}, demos=("loan",))
        try:
            for label, route, payload in CASES:
                data = body_of(payload)
                url = f"{server.base}{LOAN}/{route}"
                statuses, times = set(), []
                for attempt in range(args.repeat + 1):
                    started = time.perf_counter()
                    response = server.session.post(url, data=data)
                    elapsed = (time.perf_counter() - started) * 1000
                    statuses.add(response.status_code)
                    if response.status_code == 413:
                        server.session.close()  # gunicorn drops keep-alive after an unread large body
                    if attempt:
                        times.append(elapsed)
                times.sort()
                rows.append(
                    {
                        "case": label,
                        "statuses": sorted(statuses),
                        "request_bytes": len(data),
                        "p50_ms": round(statistics.median(times), 2),
                        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
                        "max_ms": round(times[-1], 2),
                    }
                )
                print(rows[-1], flush=True)
        finally:
            server.stop()
    print("\n| Case | Status | Request bytes | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|---|")
    for row in rows:
        statuses = "/".join(map(str, row["statuses"]))
        print(
            f"| {row['case']} | {statuses} | {row['request_bytes']:,} | {row['p50_ms']} | {row['p95_ms']} "
            f"| {row['max_ms']} |"
        )
    out = ROOT / "bench" / "results" / "rejections.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"repeat": args.repeat, "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

"""bench_load's worker-replacement phase (issue 18): 4 clients per endpoint (predict, one-row SHAP) against a
gunicorn whose workers ``max_requests`` replaces every few seconds, with the default per-key rate limit.

Goal per endpoint: no request over 300 ms, p99 <= 4x p50, no error (a 429 counts). The server is
harness.BenchServer (the project's gunicorn config, 2 workers x 4 threads, the ``loan`` demo), started for
this phase with ``--max-requests`` (and 10% jitter) on gunicorn's command line through ``GUNICORN_CMD_ARGS``,
so the same script measures a checkout that has no ``CANDOR_MAX_REQUESTS``. Before timing, the workers are
warmed the way bench_load warms them (24 requests per endpoint on fresh connections); each replacement after
that is timed.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

GOAL_MAX_MS = 300.0
GOAL_P99_OVER_P50 = 4.0
ENDPOINTS = ("predict", "shap")
HEAD = (
    "| Run | Endpoint | Clients | Requests | req/s | p50 ms | p99 ms | max ms | p99/p50 | Workers replaced "
    "| Errors | Goal met |"
)


def _stats(outcomes: list[Any], wall: float) -> dict[str, Any]:
    """Latency of every answered request (errors included in max), errors by status or failure."""
    latencies = np.array([o.latency for o in outcomes if o.status is not None]) * 1000
    errors = [o for o in outcomes if o.status != 200]
    p50 = float(np.percentile(latencies, 50)) if len(latencies) else float("nan")
    p99 = float(np.percentile(latencies, 99)) if len(latencies) else float("nan")
    worst = float(latencies.max()) if len(latencies) else float("nan")
    row = {
        "requests": len(outcomes),
        "rps": round(len(outcomes) / wall, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(worst, 2),
        "p99_over_p50": round(p99 / p50, 2) if p50 else None,
        "errors": len(errors),
        "error_kinds": dict(Counter(str(o.status or o.failure) for o in errors)),
    }
    row["goal_met"] = row["errors"] == 0 and worst <= GOAL_MAX_MS and p99 <= GOAL_P99_OVER_P50 * p50
    return row


def run(load: Any, args: argparse.Namespace, run_index: int) -> list[dict[str, Any]]:
    """One fresh server, warmed; then each endpoint for ``replace_seconds`` at ``replace_clients``."""
    jitter = max(1, args.replace_max_requests // 10)
    env = {
        "CANDOR_WORKERS": str(args.workers),
        "CANDOR_THREADS": str(args.threads),
        "GUNICORN_CMD_ARGS": f"--max-requests {args.replace_max_requests} --max-requests-jitter {jitter}",
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="candor-replace-") as tmp:
        server = load.BenchServer(Path(tmp), env, scopes=("explain",), demos=("loan",))
        try:
            load.warm_up(server)
            for endpoint in ENDPOINTS:
                outcomes, wall, replaced = load.run_phase(
                    server, [endpoint], args.replace_clients, args.replace_seconds
                )
                row = {"run": run_index, "endpoint": endpoint, "clients": args.replace_clients}
                row.update(_stats(outcomes, wall), replaced=replaced)
                rows.append(row)
                print(
                    f"  run {run_index} {endpoint:<8} {row['requests']:>6} req p50 {row['p50_ms']:.1f} "
                    f"p99 {row['p99_ms']:.1f} max {row['max_ms']:.1f} ms, {replaced} replaced, "
                    f"errors {row['error_kinds'] or 0}",
                    flush=True,
                )
        finally:
            server.stop()
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("\n" + HEAD + "\n" + "|---" * HEAD.count(" | ") + "|---|")
    for r in rows:
        cells = [r["run"], r["endpoint"], r["clients"], r["requests"], r["rps"], r["p50_ms"], r["p99_ms"]]
        cells += [r["max_ms"], r["p99_over_p50"], r["replaced"], r["error_kinds"] or 0, r["goal_met"]]
        print("| " + " | ".join(map(str, cells)) + " |")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replace-only", action="store_true", help="run only the worker-replacement phase")
    parser.add_argument("--replace-runs", type=int, default=1, help="fresh servers for that phase")
    parser.add_argument("--replace-clients", type=int, default=4)
    parser.add_argument(
        "--replace-max-requests", type=int, default=300, help="gunicorn max_requests in that phase"
    )
    parser.add_argument("--replace-seconds", type=float, default=20.0, help="per endpoint in that phase")

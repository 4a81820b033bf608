"""Load and faults against a real gunicorn (issue 6): latency and errors at increasing concurrency, then a
mixed load while workers are killed with SIGKILL, and the audit trail checked afterwards.

Run from the repository root: ``.venv/bin/python bench/bench_load.py [--quick] [--backends sqlite,postgres]``

- Server: harness.BenchServer, the project's gunicorn config (gthread; ``--workers`` 2, ``--threads`` 4, the
  project's defaults) on loopback, the ``loan`` demo only, one key with ``explain`` and ``audit:read``, and
  ``CANDOR_RATE_LIMIT`` empty: per-key rate limiting is off for the run.
- Load (a closed loop, as locust's users): N client threads, each with a keep-alive ``requests.Session``,
  send back-to-back requests for ``--seconds`` per endpoint and N: predict (1 row), SHAP (1 row),
  counterfactuals (``tests/data/loan_declined.json``, default options). Percentiles are of the 200s' latency.
- Faults: ``--fault-clients`` threads cycle through the three endpoints while a random live worker (a child
  of the master) gets SIGKILL every ``--kill-every`` seconds. A 200 explanation is acknowledged by its ``id``;
  each must then be in the audit trail (read from the database and by ``GET /v1/explanations/{id}``), the
  chain must verify and the master must have its worker count back: exit status 1 otherwise.
- Worker replacement (issue 18, ``load_replacement``): 4 clients on predict and on one-row SHAP against a
  fresh server whose workers ``max_requests`` replaces every few seconds; goal: max <= 300 ms, p99 <= 4x p50.
Prints markdown tables; writes ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import load_replacement  # noqa: E402
from harness import BenchServer  # noqa: E402

from model_store.store import Store  # noqa: E402
from model_store.tables import RecordRow  # noqa: E402

DEFAULT_PG_ADMIN = "postgresql+psycopg://candor:candor@127.0.0.1:5432/candor_test"
RESULTS = ROOT / "bench" / "results" / "load.json"
DATA = ROOT / "tests" / "data"
ROW = json.loads((DATA / "loan_shap_request.json").read_text())["instances"]
BASE_PATH = "/v1/models/loan/versions/production"
ENDPOINTS = {
    "predict": (f"{BASE_PATH}/predict", orjson.dumps({"instances": ROW})),
    "shap": (f"{BASE_PATH}/explain/shap", orjson.dumps({"instances": ROW})),
    "counterfactuals": (f"{BASE_PATH}/explain/counterfactuals", (DATA / "loan_declined.json").read_bytes()),
}
REQUEST_TIMEOUT = 60
# How a request that got no HTTP answer failed (matched in the exception chain's text), else its class name.
FAILURE_KINDS = (
    ("RemoteDisconnected", "closed without response"),
    ("reset by peer", "connection reset"),
    ("Broken pipe", "broken pipe"),
    ("refused", "connection refused"),
)


@dataclass(frozen=True)
class Outcome:
    endpoint: str
    latency: float
    status: int | None  # None: no HTTP answer
    failure: str | None
    record_id: str | None  # an acknowledged explanation's envelope id


def failure_kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "incomplete body"
    text = repr(exc)
    return next((kind for needle, kind in FAILURE_KINDS if needle in text), type(exc).__name__)


def call(session: requests.Session, base: str, endpoint: str) -> Outcome:
    path, body = ENDPOINTS[endpoint]
    started = time.perf_counter()
    try:
        response = session.post(base + path, data=body, timeout=REQUEST_TIMEOUT)
        content = response.content
    except requests.RequestException as exc:
        return Outcome(endpoint, time.perf_counter() - started, None, failure_kind(exc), None)
    latency = time.perf_counter() - started
    record_id = None
    if response.status_code == 200 and endpoint != "predict":
        record_id = orjson.loads(content)["id"]
    return Outcome(endpoint, latency, response.status_code, None, record_id)


def run_phase(
    server: BenchServer, plan: list[str], clients: int, seconds: float
) -> tuple[list[Outcome], float, int]:
    """``clients`` threads, each with its own keep-alive session, call the endpoints of ``plan`` in turn
    (client i starts at plan[i]) until ``seconds`` have passed. Returns the outcomes, the wall time until the
    last answer, and how many new worker pids appeared meanwhile (gunicorn's max_requests recycling)."""
    buckets: list[list[Outcome]] = [[] for _ in range(clients)]
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        with requests.Session() as session:
            session.headers.update(
                {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
            )
            n = i
            while time.monotonic() < stop_at:
                buckets[i].append(call(session, server.base, plan[n % len(plan)]))
                n += 1

    initial = set(server.worker_pids())
    seen = set(initial)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        time.sleep(0.25)
        seen.update(server.worker_pids())
    wall = time.monotonic() - started
    return [outcome for bucket in buckets for outcome in bucket], wall, len(seen - initial)


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(float(np.median(known)), 3) if known else None


def _ms(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def summarize(outcomes: list[Outcome], wall: float) -> dict[str, dict[str, Any]]:
    """Per endpoint: requests, throughput, latency percentiles of the 200s, errors by status and failure."""
    table = {}
    for endpoint in ENDPOINTS:
        mine = [o for o in outcomes if o.endpoint == endpoint]
        if not mine:
            continue
        ok = [o.latency for o in mine if o.status == 200]
        table[endpoint] = {
            "endpoint": endpoint,
            "requests": len(mine),
            "ok": len(ok),
            "rps": round(len(mine) / wall, 2),
            "p50_ms": _ms(ok, 50),
            "p95_ms": _ms(ok, 95),
            "p99_ms": _ms(ok, 99),
            "errors": len(mine) - len(ok),
            "statuses": dict(Counter(str(o.status) for o in mine if o.status not in (None, 200))),
            "failures": dict(Counter(o.failure for o in mine if o.failure)),
        }
    return table


def probe(base: str) -> None:
    """One health request on a fresh connection: whichever worker accepts it answers it."""
    with contextlib.suppress(requests.RequestException):
        requests.get(base + "/v1/health", headers={"Connection": "close"}, timeout=1)


def watch_recovery(
    server: BenchServer, workers: int, known: set[int], timeout: float
) -> tuple[float | None, float | None]:
    """After a kill: seconds until the master has ``workers`` live children again (a replacement, a pid not in
    ``known``, forked), and until that replacement answered a request (it writes its Prometheus files under
    ``<data dir>/metrics`` on its first answer). Health probes on fresh connections reach it once it accepts:
    the clients' keep-alive connections stay with the surviving worker. None: not within ``timeout``."""
    started = time.monotonic()
    forked: float | None = None
    while (elapsed := time.monotonic() - started) < timeout:
        pids = server.worker_pids()
        fresh = [pid for pid in pids if pid not in known]
        if forked is None and len(pids) == workers and fresh:
            forked = round(elapsed, 3)
        metrics = server.data_dir / "metrics"
        if forked is not None and any(any(metrics.glob(f"*_{pid}.db")) for pid in fresh):
            return forked, round(elapsed, 3)
        if forked is not None:
            probe(server.base)
        time.sleep(0.02)
    return forked, None


def killer(
    server: BenchServer, workers: int, seconds: float, every: float, seed: int
) -> list[dict[str, Any]]:
    """SIGKILL a random live worker at every, 2*every, ... seconds (before ``seconds``), watching each
    recovery until the next kill is due (the last one for up to 20 s)."""
    rng = random.Random(seed)
    kills: list[dict[str, Any]] = []
    t0 = time.monotonic()
    k = 1
    while k * every < seconds:
        time.sleep(max(0.0, t0 + k * every - time.monotonic()))
        pids = server.worker_pids()
        pid = rng.choice(pids) if pids else -1
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile (max_requests)
            os.kill(pid, signal.SIGKILL)
        at = time.monotonic()
        last = (k + 1) * every >= seconds  # watched for up to 20 s, as the load ends
        timeout = 20.0 if last else t0 + (k + 1) * every - at - 0.05
        forked, serving = watch_recovery(server, workers, set(pids), timeout)
        kills.append(
            {"at_s": round(at - t0, 2), "pid": pid, "before": pids, "forked_s": forked, "serving_s": serving}
        )
        k += 1
    return kills


def run_faults(
    server: BenchServer, workers: int, clients: int, seconds: float, every: float, seed: int
) -> dict[str, Any]:
    """The mixed load while workers are killed; then the master's worker count, again and a little later."""
    kills: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: kills.extend(killer(server, workers, seconds, every, seed)))
    thread.start()
    outcomes, wall, _ = run_phase(server, list(ENDPOINTS), clients, seconds)
    thread.join()
    pids = server.worker_pids()
    time.sleep(2.0)
    stable = server.worker_pids() == pids
    forks = [kill["forked_s"] for kill in kills]
    servings = [kill["serving_s"] for kill in kills]
    return {
        "kills": kills,
        "requests": len(outcomes),
        "rps": round(len(outcomes) / wall, 2),
        "acknowledged": sum(1 for o in outcomes if o.record_id),
        "acknowledged_ids": [o.record_id for o in outcomes if o.record_id],
        "per_endpoint": summarize(outcomes, wall),
        "http_errors": dict(Counter(str(o.status) for o in outcomes if o.status not in (None, 200))),
        "connection_errors": dict(Counter(o.failure for o in outcomes if o.failure)),
        "forked_max_s": None if None in forks else max(forks, default=0.0),
        "serving_p50_s": _median(servings),
        "serving_max_s": max((v for v in servings if v is not None), default=None),
        "last_serving_s": servings[-1] if servings else 0.0,
        "serving_late": sum(1 for s in servings if s is None),
        "final_workers": len(server.worker_pids()),
        "workers_stable_2s": stable,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 s phases, 1 and 4 clients, 8 s faults"
    )
    parser.add_argument("--backends", default="sqlite", help="comma-separated: sqlite, postgres")
    parser.add_argument(
        "--pg-admin-url", default=os.environ.get("CANDOR_TEST_POSTGRES_URL") or DEFAULT_PG_ADMIN
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--concurrency", default="1,4,16,32", help="client counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="per endpoint and concurrency")
    parser.add_argument("--fault-clients", type=int, default=8)
    parser.add_argument("--fault-seconds", type=float, default=30.0)
    parser.add_argument("--kill-every", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    load_replacement.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.seconds, args.fault_seconds, args.kill_every = "1,4", 2.0, 8.0, 2.0
    args.concurrency = [int(n) for n in args.concurrency.split(",")]
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    return args


def _admin(admin_url: str, statement: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text(statement))
    engine.dispose()


def start_server(backend: str, data_dir: Path, args: argparse.Namespace) -> tuple[BenchServer, str | None]:
    """A BenchServer on ``backend``; for PostgreSQL a fresh database (returned, to drop afterwards)."""
    database, url = None, None
    if backend == "postgres":
        database = "candor_load_" + uuid.uuid4().hex[:12]
        _admin(args.pg_admin_url, f'CREATE DATABASE "{database}" TEMPLATE template0')
        url = args.pg_admin_url.rsplit("/", 1)[0] + "/" + database
    elif backend != "sqlite":
        raise SystemExit(f"unknown backend {backend!r}")
    env = {"CANDOR_WORKERS": str(args.workers), "CANDOR_THREADS": str(args.threads), "CANDOR_RATE_LIMIT": ""}
    try:
        server = BenchServer(
            data_dir, env, scopes=("explain", "audit:read"), database_url=url, demos=("loan",)
        )
    except BaseException:
        if database:
            _admin(args.pg_admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        raise
    return server, database


def warm_up(server: BenchServer, per_endpoint: int = 24) -> None:
    """Each endpoint ``per_endpoint`` times on fresh connections from 4 threads: idle workers race for each
    connection, so every worker loads ``loan`` and builds its explainers before anything is timed."""
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Content-Type": "application/json",
        "Connection": "close",
    }

    def one(endpoint: str) -> int:
        path, body = ENDPOINTS[endpoint]
        return requests.post(
            server.base + path, data=body, headers=headers, timeout=REQUEST_TIMEOUT
        ).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = Counter(pool.map(one, [endpoint for endpoint in ENDPOINTS for _ in range(per_endpoint)]))
    if set(statuses) != {200}:
        raise RuntimeError(f"warm-up answers: {dict(statuses)}")


def load_phases(server: BenchServer, args: argparse.Namespace) -> list[dict[str, Any]]:
    warm_up(server)
    rows = []
    for clients in args.concurrency:
        for endpoint in ENDPOINTS:
            cpu = sum(os.times()[:2])
            outcomes, wall, recycled = run_phase(server, [endpoint], clients, args.seconds)
            row = {"clients": clients, **summarize(outcomes, wall)[endpoint], "worker_recycles": recycled}
            row["client_cpu"] = round((sum(os.times()[:2]) - cpu) / wall, 2)  # CPUs the clients kept busy
            row["loadavg"] = os.getloadavg()[0]
            rows.append(row)
            print(
                f"  {clients:>3} clients {endpoint:<16} {row['requests']:>6} req {row['rps']:>7.1f} req/s "
                f"p50 {row['p50_ms']:.1f} p99 {row['p99_ms']:.1f} ms errors {row['errors']}",
                flush=True,
            )
    return rows


def missing_in_store(server: BenchServer, ids: list[str]) -> list[str]:
    """Acknowledged ids without a record, read straight from the database."""
    store = Store(server.data_dir, server.database_url, migrate=False)
    found: set[str] = set()
    with store.sessions() as session:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            found.update(session.scalars(sa.select(RecordRow.id).where(RecordRow.id.in_(chunk))))
    store.close()
    return [i for i in ids if i not in found]


def record_count(server: BenchServer) -> int:
    store = Store(server.data_dir, server.database_url, migrate=False)
    with store.sessions() as session:
        count = int(session.scalar(sa.select(sa.func.count()).select_from(RecordRow)) or 0)
    store.close()
    return count


def missing_through_api(server: BenchServer, ids: list[str]) -> dict[str, int]:
    """GET /v1/explanations/{id} for every id; the statuses other than 200, counted."""

    def fetch(record_id: str) -> int:
        try:
            return server.session.get(f"{server.base}/v1/explanations/{record_id}", timeout=30).status_code
        except Exception:
            return -1

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(fetch, ids))
    bad: dict[str, int] = {}
    for status in statuses:
        if status != 200:
            bad[str(status)] = bad.get(str(status), 0) + 1
    return bad


def log_excerpt(server: BenchServer) -> dict[str, Any]:
    """What the server logged: worker kills gunicorn noticed, and every other error line (first 20)."""
    server.log.flush()
    lines = (server.data_dir / "gunicorn.log").read_text(errors="replace").splitlines()
    kills = [line for line in lines if "SIGKILL" in line]
    errors = [
        line
        for line in lines
        if ("ERROR" in line or "Traceback" in line or '"status": 500' in line) and "SIGKILL" not in line
    ]
    return {"sigkill_lines": len(kills), "other_error_lines": len(errors), "error_excerpt": errors[:20]}


def fault_phase(server: BenchServer, args: argparse.Namespace) -> dict[str, Any]:
    """The mixed load for half the time without kills (the baseline), then with kills; then the checks."""
    outcomes, wall, _ = run_phase(server, list(ENDPOINTS), args.fault_clients, args.fault_seconds / 2)
    baseline: dict[str, Any] = {"requests": len(outcomes), "rps": round(len(outcomes) / wall, 2)}
    baseline["per_endpoint"] = summarize(outcomes, wall)
    before = record_count(server)
    result = run_faults(
        server, args.workers, args.fault_clients, args.fault_seconds, args.kill_every, args.seed
    )
    ids = result.pop("acknowledged_ids")
    result["missing_in_database"] = missing_in_store(server, ids)
    result["missing_through_api"] = missing_through_api(server, ids)
    result["records_written"] = record_count(server) - before
    verdict = server.session.get(server.base + "/v1/audit/verify", timeout=120).json()
    result["verify"] = verdict
    result["log"] = log_excerpt(server)
    return {**result, "baseline": baseline}


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n## {backend}", flush=True)
    with tempfile.TemporaryDirectory(prefix="candor-load-") as tmp:
        server, database = start_server(backend, Path(tmp), args)
        try:
            print(f"server up: {args.workers} workers x {args.threads} threads, pids {server.worker_pids()}")
            load = load_phases(server, args)
            print(f"faults: {args.fault_clients} clients, SIGKILL every {args.kill_every} s", flush=True)
            faults = fault_phase(server, args)
        finally:
            server.stop()
            if database:
                _admin(args.pg_admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {
        "backend": backend,
        "install_seconds": round(server.install_seconds, 1),
        "load": load,
        "faults": faults,
    }


def conditions(args: argparse.Namespace) -> dict[str, Any]:
    versions = {name: metadata.version(name) for name in ("gunicorn", "flask", "requests", "sqlalchemy")}
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": "gthread",
        "rate_limit": "off (CANDOR_RATE_LIMIT='')",
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "fault_clients": args.fault_clients,
        "fault_seconds": args.fault_seconds,
        "kill_every_s": args.kill_every,
        "loadavg_start": os.getloadavg()[0],
    }


def fault_ok(faults: dict[str, Any], workers: int) -> bool:
    return (
        not faults["missing_in_database"]
        and not faults["missing_through_api"]
        and faults["verify"].get("ok") is True
        and faults["final_workers"] == workers
        and faults["last_serving_s"] is not None
    )


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {n}" for kind, n in counts.items()) or "0"


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


LOAD_HEAD = (
    "| Backend | Endpoint | Clients | Requests | req/s | p50 ms | p95 ms | p99 ms "
    "| Errors | Recycled | Client CPU | Load |"
)
FAULT_HEAD = (
    "| Backend | req/s without kills | Kills | Requests | req/s | Acknowledged | Records | HTTP errors "
    "| No HTTP answer | Missing | Chain |"
)
RECOVERY_HEAD = (
    "| Backend | Replacement forked, max s | Its first answer p50 / max s | Not before next kill "
    "| Last kill: answered after s | Workers after | Stable 2 s |"
)


def _load_line(backend: str, r: dict[str, Any]) -> str:
    cells = [backend, r["endpoint"], r["clients"], r["requests"], f"{r['rps']:.1f}"]
    cells += [_f(r["p50_ms"]), _f(r["p95_ms"]), _f(r["p99_ms"]), _counts({**r["statuses"], **r["failures"]})]
    cells += [r["worker_recycles"], f"{r['client_cpu']:.2f}", f"{r['loadavg']:.2f}"]
    return "| " + " | ".join(map(str, cells)) + " |"


def _fault_lines(backend: str, f: dict[str, Any]) -> tuple[str, str]:
    missing = len(f["missing_in_database"]) + sum(f["missing_through_api"].values())
    verdict = f["verify"]
    chain = (
        "ok" if verdict.get("ok") else f"BROKEN at {verdict.get('first_break')}"
    ) + f" ({verdict.get('checked')})"
    cells = [backend, f"{f['baseline']['rps']:.1f}", len(f["kills"]), f["requests"], f"{f['rps']:.1f}"]
    cells += [f["acknowledged"], f["records_written"]]
    cells += [_counts(f["http_errors"]), _counts(f["connection_errors"]), missing, chain]
    serving = f"{_f(f['serving_p50_s'], 2)} / {_f(f['serving_max_s'], 2)}"
    recovery = [backend, _f(f["forked_max_s"], 2), serving, f["serving_late"], _f(f["last_serving_s"], 2)]
    recovery += [f["final_workers"], f["workers_stable_2s"]]
    return "| " + " | ".join(map(str, cells)) + " |", "| " + " | ".join(map(str, recovery)) + " |"


def print_tables(results: dict[str, Any]) -> None:
    c = results["conditions"]
    print(f"\n{c['cpu_count']} CPUs, {c['workers']} workers x {c['threads']} threads, rate limit off\n")
    print(LOAD_HEAD + "\n" + "|---" * LOAD_HEAD.count(" | ") + "|---|")
    for run in results["runs"]:
        for row in run["load"]:
            print(_load_line(run["backend"], row))
    faults = [_fault_lines(run["backend"], run["faults"]) for run in results["runs"]]
    for head, index in ((FAULT_HEAD, 0), (RECOVERY_HEAD, 1)):
        print("\n" + head + "\n" + "|---" * head.count(" | ") + "|---|")
        for lines in faults:
            print(lines[index])


def replacement_phases(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The worker-replacement phase (``load_replacement``), ``--replace-runs`` times on fresh servers."""
    print(
        f"\n## worker replacement: {args.replace_clients} clients, max_requests {args.replace_max_requests}, "
        "default rate limit",
        flush=True,
    )
    this = sys.modules[__name__]
    return [row for i in range(args.replace_runs) for row in load_replacement.run(this, args, i + 1)]


def main() -> int:
    args = parse_args()
    results: dict[str, Any] = {"conditions": conditions(args), "runs": []}
    started = time.monotonic()
    if not args.replace_only:
        for backend in args.backends:
            results["runs"].append(run_backend(backend, args))
    results["replacement"] = replacement_phases(args)
    results["conditions"]["loadavg_end"] = os.getloadavg()[0]
    results["conditions"]["total_seconds"] = round(time.monotonic() - started, 1)
    if not args.replace_only:
        print_tables(results)
    load_replacement.print_table(results["replacement"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {RESULTS.relative_to(ROOT)} ({results['conditions']['total_seconds']} s)")
    faults_ok = all(fault_ok(run["faults"], args.workers) for run in results["runs"])
    return 0 if faults_ok and all(row["goal_met"] for row in results["replacement"]) else 1


if __name__ == "__main__":
    sys.exit(main())

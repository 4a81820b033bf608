"""The audit log at scale (issue 20: "inclusion proof via HTTP p50 <= 5 ms on a 1,000,000-leaf log; offline
verification of 1,000,000 leaves <= 30 s").

Builds a log of ``--leaves`` records in a throw-away data dir (``AuditTrail.append`` in batches, then
``AuditLog.integrate``), times one integration of a 1,000-leaf backlog on top, then the proof path in-process
(leaf, latest checkpoint, inclusion path), starts the real gunicorn with a signing key in the data dir
and times ``GET /v1/explanations/{id}/proof`` for random records (one client, then 4), checking a sample of
proofs against the signed checkpoint; exports the whole log over HTTP and checks it with
``python -m candor_verify export``; last, ``GET /v1/audit/verify``.

Run: ``.venv/bin/python bench/bench_audit_log.py [--leaves 1000000] [--database-url URL]``; results in
bench/results/audit_log.json. Exit status 1 when a proof, the export or the log does not verify.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from harness import ROOT, BenchServer
from sqlalchemy import select

from api.ops.audit_key import create_key
from candor_verify import merkle
from candor_verify.checkpoint import open_checkpoint
from candor_verify.note import Verifier
from model_store.audit import RECORDS, RecordDraft
from model_store.store import Store

BACKLOG = 1_000


def draft(index: int, filler: str) -> RecordDraft:
    """A small explanation record (``filler`` pads it to the body size asked for)."""
    return RecordDraft(
        id=f"bench-{index:09d}",
        kind="shap",
        model_name="loan",
        model_version=1,
        key_id="bench",
        status="ok",
        content={
            "explanation": {"attributions": [{"feature": "income", "attribution": index * 1e-6}]},
            "request": {"instances": [{"income": index % 9973, "note": filler}]},
        },
    )


def build(store: Store, leaves: int, batch: int, body_bytes: int) -> dict[str, Any]:
    """Append ``leaves`` records, integrate them, then time one integration of a backlog on top."""
    filler = "x" * max(0, body_bytes - 330)
    started = time.perf_counter()
    for start in range(0, leaves, batch):
        store.audit.append([draft(i, filler) for i in range(start, min(leaves, start + batch))])
        if start and start % 100_000 == 0:
            print(f"  appended {start:,} ({time.perf_counter() - started:.0f} s)", flush=True)
    append_s = time.perf_counter() - started
    started = time.perf_counter()
    store.audit_log.integrate()
    integrate_s = time.perf_counter() - started
    store.audit.append([draft(i, filler) for i in range(leaves, leaves + BACKLOG)])
    started = time.perf_counter()
    size = store.audit_log.integrate()
    backlog_s = time.perf_counter() - started
    return {
        "leaves": size,
        "body_bytes": len(store.audit.get(draft(0, "").id)["request"]["instances"][0]["note"]) + 330,
        "append_s": round(append_s, 1),
        "append_records_per_s": round(leaves / append_s),
        "integrate_s": round(integrate_s, 1),
        "integrate_leaves_per_s": round(leaves / integrate_s),
        "backlog_integrate_ms": round(backlog_s * 1000, 1),
    }


def percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))] * 1000, 3),
        "max_ms": round(times[-1] * 1000, 3),
    }


def in_process(store: Store, ids: list[str]) -> dict[str, Any]:
    """The proof path's parts called directly, each timed over ``ids``."""
    audit_log = store.audit_log
    size = audit_log.head()["tree_size"]
    parts: dict[str, Callable[[str], Any]] = {
        "leaf": audit_log.leaf,
        "latest_checkpoint": lambda _: audit_log.checkpoint(),
        "inclusion": lambda record_id: audit_log.inclusion(audit_log.leaf(record_id)[0], size),
    }
    out = {}
    for name, call in parts.items():
        times = []
        for record_id in ids:
            started = time.perf_counter()
            call(record_id)
            times.append(time.perf_counter() - started)
        out[name] = percentiles(times)
    return out


def get_proofs(
    server: BenchServer, ids: list[str], session: requests.Session
) -> tuple[list[float], list[Any]]:
    times, proofs = [], []
    for record_id in ids:
        started = time.perf_counter()
        response = session.get(f"{server.base}/v1/explanations/{record_id}/proof")
        times.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code} from the proof route: {response.text[:500]}")
        proofs.append((record_id, response.json()))
    return times, proofs


def proof_latency(server: BenchServer, ids: list[str], clients: int) -> tuple[dict[str, Any], list[Any]]:
    """``ids`` split among ``clients`` threads, each with its own keep-alive session."""
    shares = [ids[i::clients] for i in range(clients)]
    results: list[tuple[list[float], list[Any]]] = [([], [])] * clients

    def run(n: int) -> None:
        with requests.Session() as session:
            session.headers.update(server.session.headers)
            results[n] = get_proofs(server, shares[n], session)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    times = [t for share in results for t in share[0]]
    if len(times) != len(ids):
        raise RuntimeError("a client thread failed")
    stats = {"clients": clients, "requests": len(ids), **percentiles(times), "per_s": round(len(ids) / wall)}
    return stats, [p for share in results for p in share[1]]


def check_proofs(store: Store, proofs: list[Any], verifier: Verifier) -> int:
    """How many of ``proofs`` verify against their signed checkpoint and the record's own leaf hash."""
    good = 0
    for record_id, proof in proofs:
        checkpoint = open_checkpoint(proof["checkpoint"], verifier)
        leaf = base64.b64decode(proof["leaf_hash"])
        with store.sessions() as session:
            body = session.execute(select(RECORDS.c.body).where(RECORDS.c.id == record_id)).scalar_one()
        path = [base64.b64decode(node) for node in proof["inclusion_path"]]
        good += (
            checkpoint.size == proof["tree_size"]
            and leaf == merkle.leaf_hash(body.encode())
            and merkle.verify_inclusion(proof["leaf_index"], proof["tree_size"], leaf, path, checkpoint.root)
        )
    return good


def key_latency(server: BenchServer, repeat: int) -> dict[str, Any]:
    """``GET /v1/audit/key`` (authenticated, no query): the HTTP, auth and Flask floor under a proof."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        server.session.get(f"{server.base}/v1/audit/key").raise_for_status()
        times.append(time.perf_counter() - started)
    return percentiles(times)


def export(server: BenchServer, out: Path) -> dict[str, Any]:
    """The whole log as JSON Lines over HTTP, written to ``out``."""
    started = time.perf_counter()
    with server.session.get(f"{server.base}/v1/explanations/export?format=jsonl", stream=True) as response:
        response.raise_for_status()
        with out.open("wb") as sink:
            for chunk in response.iter_content(1 << 20):
                sink.write(chunk)
    seconds = time.perf_counter() - started
    with out.open("rb") as source:
        source.seek(max(0, out.stat().st_size - 4096))
        last = source.read().splitlines()[-1]
    return {
        "seconds": round(seconds, 1),
        "bytes": out.stat().st_size,
        "last_line_is_error": last.startswith(b'{"error"'),
    }


def offline_verify(export_file: Path, checkpoint: Path, key: Path) -> dict[str, Any]:
    """``python -m candor_verify export`` on the export, timed (the whole process)."""
    command = [sys.executable, "-m", "candor_verify", "export", str(export_file)]
    started = time.perf_counter()
    done = subprocess.run(
        [*command, "--checkpoint", str(checkpoint), "--key", str(key)],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seconds = time.perf_counter() - started
    report = json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr.decode()[-2000:]}
    return {"seconds": round(seconds, 1), "exit_status": done.returncode, "report": report}


def online_verify(server: BenchServer, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        response = server.session.get(f"{server.base}/v1/audit/verify", timeout=timeout)
    except requests.Timeout:
        return {"seconds": None, "note": f"no answer within {timeout:.0f} s"}
    body = response.json()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "status": response.status_code,
        "ok": body.get("ok"),
        "leaves": body.get("leaves", body.get("checked")),
    }


def served(server: BenchServer, tmp: Path, store: Store, ids: list[str], args: Any) -> dict[str, Any]:
    """Everything measured through the running server."""
    key = server.session.get(f"{server.base}/v1/audit/key").text.strip()
    note = server.session.get(f"{server.base}/v1/audit/checkpoint")
    note.raise_for_status()
    (tmp / "verifier.key").write_text(key + "\n")
    (tmp / "checkpoint.txt").write_bytes(note.content)
    verifier = Verifier.from_key(key)
    proof_latency(server, ids[:100], 1)  # warm-up
    one, proofs = proof_latency(server, ids, 1)
    print("proof, 1 client:", one, flush=True)
    four, _ = proof_latency(server, ids, 4)
    print("proof, 4 clients:", four, flush=True)
    floor = key_latency(server, len(ids) // 2)
    print("GET /v1/audit/key, 1 client:", floor, flush=True)
    sample = random.Random(1).sample(proofs, min(200, len(proofs)))
    good = check_proofs(store, sample, verifier)
    print(f"proofs checked: {good}/{len(sample)} verify", flush=True)
    exported = export(server, tmp / "export.jsonl")
    print("export:", exported, flush=True)
    offline = offline_verify(tmp / "export.jsonl", tmp / "checkpoint.txt", tmp / "verifier.key")
    print("offline verify:", {k: v for k, v in offline.items() if k != "report"}, offline["report"].get("ok"))
    if args.keep_export:
        (tmp / "export.jsonl").rename(args.keep_export)
    online = online_verify(server, args.verify_timeout) if args.verify_timeout > 0 else {"skipped": True}
    print("online verify:", online, flush=True)
    return {
        "proof_1_client": one,
        "proof_4_clients": four,
        "key_1_client": floor,
        "proofs_checked": len(sample),
        "proofs_verified": good,
        "checkpoint": note.text.splitlines()[:2],
        "export": exported,
        "offline_verify": offline,
        "online_verify": online,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=10_000, help="records per append")
    parser.add_argument("--body-bytes", type=int, default=400, help="about how long each record's body is")
    parser.add_argument("--requests", type=int, default=2_000, help="proof requests per measurement")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (1 thread each)")
    parser.add_argument(
        "--verify-timeout", type=float, default=900, help="seconds for /v1/audit/verify (0: skip)"
    )
    parser.add_argument(
        "--database-url", help="e.g. a fresh PostgreSQL database (default SQLite in the data dir)"
    )
    parser.add_argument("--keep-export", type=Path, help="move the export here (default: deleted)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "audit_log.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        store = Store(data_dir, args.database_url or f"sqlite:///{data_dir / 'candor.db'}")
        create_key(data_dir / "audit" / "signing.key")
        results: dict[str, Any] = {"cpus": os.cpu_count(), "database": store.engine.dialect.name}
        results["build"] = build(store, args.leaves, args.batch, args.body_bytes)
        print("build:", results["build"], flush=True)
        ids = [f"bench-{i:09d}" for i in random.Random(0).choices(range(args.leaves), k=args.requests)]
        results["in_process"] = in_process(store, ids[:500])
        print("in-process proof path:", results["in_process"], flush=True)
        env = {"CANDOR_RATE_LIMIT": "off", "CANDOR_WORKERS": str(args.workers)}
        server = BenchServer(data_dir, env, scopes=("audit:read",), database_url=args.database_url, demos=())
        try:
            results.update(served(server, tmp, store, ids, args))
        finally:
            server.stop()
            store.close()
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    ok = (
        results["proofs_verified"] == results["proofs_checked"]
        and results["offline_verify"]["exit_status"] == 0
    )
    sys.exit(0 if ok and results["online_verify"].get("ok", True) else 1)


if __name__ == "__main__":
    main()

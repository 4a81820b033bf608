"""Two API hosts on one PostgreSQL, as separate gunicorn processes with separate data dirs and nothing on a
shared disk: a version registered through host A is served by host B (its artifacts in the database, or in
an object store through an fsspec ``file://`` URL to a third directory); keys, rate limits (Redis) and the
audit log are shared; a job submitted to A is visible on B, run by a runner with a data dir of its own, and
its result read from B; records from both hosts are leaves of one log, and a record made on B is proved by
A against a checkpoint signed with the hosts' one key."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn_process import free_port, running_gunicorn, server_env
from test_rate_limit_redis import redis_url  # noqa: F401  (the fixture: a private redis-server)
from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

from api.jobs.runner import Runner
from api.ops.audit_key import create_key
from api.settings import Settings
from candor_verify import merkle
from candor_verify.checkpoint import open_checkpoint
from candor_verify.note import Verifier
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store

RATE = 40
FRAME = tiny_frame(seed=3)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def register(base: str, token: str) -> requests.Response:
    files = {
        "manifest": (None, json.dumps(tiny_manifest("tiny"))),
        "artifact": ("model.skops", io.BytesIO(dump_skops(tiny_pipeline(FRAME)))),
        "reference": ("reference.parquet", io.BytesIO(to_parquet(FRAME))),
    }
    return requests.post(f"{base}/v1/models/tiny/versions", files=files, headers=bearer(token), timeout=120)


def explain(base: str, token: str) -> dict[str, Any]:
    rows = FRAME.drop(columns=["label"], errors="ignore").head(3).to_dict("records")
    response = requests.post(
        f"{base}/v1/models/tiny/versions/1/explain/shap",
        json={"instances": rows},
        headers=bearer(token),
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def hashes_under(directory: Path) -> set[str]:
    """The sha256 of every file under ``directory``."""
    files = [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("artifact_store", ["database", "file"])
def test_two_hosts_share_models_keys_limits_jobs_and_the_log(
    artifact_store: str,
    postgres_url: str,
    redis_url: str,  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    objects = tmp_path / "objects"
    where = "database" if artifact_store == "database" else objects.as_uri()
    key_file = tmp_path / "secrets" / "signing.key"
    create_key(key_file)  # one key for the log, deployed to every host like its database password
    admin_store = Store(tmp_path / "admin", postgres_url, artifact_store=where)
    tokens = {
        scope: admin_store.keys.create(f"two-hosts-{scope}", [scope])[0]
        for scope in ("models:write", "explain", "audit:read")
    }
    burst = admin_store.keys.create("burst", ["explain"])[0]
    admin_store.close()
    hosts = {name: tmp_path / f"host-{name}" for name in ("a", "b")}
    settings = {
        "CANDOR_DATABASE_URL": postgres_url,
        "CANDOR_ARTIFACT_STORE": where,
        "CANDOR_AUDIT_KEY_FILE": str(key_file),
        "CANDOR_RATE_LIMIT": f"{RATE}/minute",
        "CANDOR_RATE_LIMIT_STORAGE": redis_url,
        "CANDOR_WORKERS": "1",
        "CANDOR_LOG_LEVEL": "warning",
    }
    with (
        running_gunicorn(server_env(hosts["a"], free_port(), **settings), tmp_path / "a.log") as a,
        running_gunicorn(server_env(hosts["b"], free_port(), **settings), tmp_path / "b.log") as b,
    ):
        registered = register(a.base, tokens["models:write"])
        assert registered.status_code == 201, registered.text
        sha = registered.json()["artifact_sha256"]
        assert sha not in hashes_under(hosts["b"]), "nothing of A's on B's disk"

        on_b = explain(b.base, tokens["explain"])
        on_a = explain(a.base, tokens["explain"])
        assert on_b["model"] == on_a["model"] == {"name": "tiny", "version": 1, "sha256": sha}
        assert [r["attributions"] for r in on_b["results"]] == [r["attributions"] for r in on_a["results"]]
        if artifact_store == "file":
            assert sha in hashes_under(objects), "the artifact is kept in the object store"

        _check_rate_limit_is_shared(a.base, b.base, burst)
        _check_job_across_hosts(a.base, b.base, tokens["explain"], tmp_path, postgres_url, where)
        _check_one_log(a.base, b.base, tokens["audit:read"], [on_b["id"], on_a["id"]])


def _check_rate_limit_is_shared(a: str, b: str, token: str) -> None:
    answers = [
        requests.get(f"{(a, b)[i % 2]}/v1/models", headers=bearer(token), timeout=30).status_code
        for i in range(RATE + 1)
    ]
    assert answers[:RATE] == [200] * RATE and answers[RATE] == 429, "one count per key across both hosts"


def _check_job_across_hosts(a: str, b: str, token: str, tmp_path: Path, database: str, where: str) -> str:
    body = {"model": "tiny", "version": "1", "kind": "shap", "dataset": "reference"}
    submitted = requests.post(f"{a}/v1/jobs", json=body, headers=bearer(token), timeout=60)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    seen = requests.get(f"{b}/v1/jobs/{job_id}", headers=bearer(token), timeout=30)
    assert seen.status_code == 200 and seen.json()["status"] == "queued"
    runner_settings = Settings.load(
        {
            "data_dir": tmp_path / "runner",
            "database_url": database,
            "artifact_store": where,
            "dask_workers": 1,
            "audit_checkpoint_seconds": 0,
        },
        environ={},
    )
    assert Runner(runner_settings).run(once=True) == 1
    deadline = time.monotonic() + 30
    while (status := requests.get(f"{b}/v1/jobs/{job_id}", headers=bearer(token), timeout=30).json())[
        "status"
    ] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status["status"] == "succeeded", status
    lines = requests.get(f"{b}/v1/jobs/{job_id}/result", headers=bearer(token), timeout=60).text.splitlines()
    assert [json.loads(line)["row"] for line in lines] == list(range(len(FRAME)))
    return str(job_id)


def _check_one_log(a: str, b: str, token: str, made: list[str]) -> None:
    verdict = requests.get(f"{a}/v1/audit/verify", headers=bearer(token), timeout=120)
    assert verdict.status_code == 200 and verdict.json()["ok"] is True, verdict.text
    assert verdict.json()["checked"] == len(made) + len(FRAME), "both hosts' records and the job's rows"
    key_a = requests.get(f"{a}/v1/audit/key", headers=bearer(token), timeout=30).text.strip()
    key_b = requests.get(f"{b}/v1/audit/key", headers=bearer(token), timeout=30).text.strip()
    assert key_a == key_b
    verifier = Verifier.from_key(key_a)
    for record_id in made:
        proof = requests.get(
            f"{a}/v1/explanations/{record_id}/proof", headers=bearer(token), timeout=30
        ).json()
        signed = open_checkpoint(proof["checkpoint"], verifier)
        path = [b64(node) for node in proof["inclusion_path"]]
        leaf = b64(proof["leaf_hash"])
        assert merkle.verify_inclusion(proof["leaf_index"], signed.size, leaf, path, signed.root)

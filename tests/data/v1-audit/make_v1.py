"""Make the v1 audit fixture: databases written by the previous release's own service (the hash chain).

Run it with the code of commit 55b3615 (the last release with the hash-chain audit trail, Alembic 0007) first
on the path; it imports nothing from newer code and refuses to run on code without ``model_store.audit``'s
chain or with a migration past 0007:

    git -C /work/main archive 55b3615 | (mkdir -p /tmp/v1rel && tar -x -C /tmp/v1rel)
    # or: git worktree add /tmp/v1rel 55b3615
    cd /tmp/v1rel && PYTHONPATH=/tmp/v1rel:/tmp/v1rel/tests \\
        CANDOR_TEST_POSTGRES_URL=postgresql+psycopg://candor:candor@127.0.0.1:5432/candor_test \\
        /work/main/.venv/bin/python /path/to/tests/data/v1-audit/make_v1.py

(``tests`` of that release on the path for ``tiny_text``, the tiny BERT the attention tests use.)

For each backend (a fresh SQLite file; a fresh PostgreSQL database on CANDOR_TEST_POSTGRES_URL's server) it
starts the real app (``create_app`` and its test client), installs the demo loan model (and a second loan
version with ``store_inputs: hash``), uploads the tiny BERT through REST, and makes: three explanations; a
purge of them as ``candor audit purge`` does it (``AuditTrail.purge``, then the blobs only they referred to),
so the chain starts with a checkpoint record; then shap (two, one sent twice with an ``Idempotency-Key``),
counterfactuals, reasons, a KServe explain, attention (weights kept as blobs), attributions, shap on the
hashed-inputs version, a 3-row shap batch job run by the real job runner (a one-worker Dask cluster) and a
last shap. It checks ``verify_trail`` and writes next to itself: ``candor-v1.db`` (VACUUMed),
``candor-v1-postgres.sql`` (``pg_dump --no-owner --no-privileges``, checked to restore with psql into an empty
database) and ``expected.json`` (what the test and the migration must find: every record in chain order, the
head, the blobs, the idempotency rows, the job, the Alembic revision, the model versions the records name).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
RELEASE_REVISION = "0007"
LOAN = "/v1/models/loan/versions/1"
TRIAGE = "/v1/models/triage/versions/1"
TEXTS = [
    "Patient wheezing with chest pain since this morning.",
    "Routine follow up, medication refill requested.",
]
PURGED_TEXT = "Mild cough for two days, no fever."


def check_release() -> None:
    """Refuse to run on code that is not the chain release."""
    import model_store
    from model_store import audit

    versions = Path(model_store.__file__).parent / "migrations" / "versions"
    newest = max(p.name[:4] for p in versions.glob("0*.py"))
    if newest != RELEASE_REVISION or not hasattr(audit, "GENESIS") or not hasattr(audit.AuditTrail, "purge"):
        sys.exit(f"make_v1.py needs the code of 55b3615 on the path (found migrations up to {newest})")
    print(f"release code: {Path(model_store.__file__).parent.parent}")


def loan_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    from api.demo import german_credit

    frame = german_credit().drop(columns=["creditability"]).iloc[start : start + count]
    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def declined_row() -> dict[str, Any]:
    source = Path(sys.modules["api"].__file__ or "").parents[1] / "tests" / "data" / "loan_declined.json"
    return json.loads(source.read_text())["instances"][0]  # type: ignore[no-any-return]


def tar_of(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(directory.rglob("*")):
            archive.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


class Maker:
    """The release's app over one database, and the requests that fill its audit trail."""

    def __init__(self, data_dir: Path, url: str) -> None:
        from api.http.app import create_app

        self.app = create_app({"data_dir": data_dir, "database_url": url, "dask_workers": 1})
        self.store = self.app.extensions["candor"].store
        self.client = self.app.test_client()
        self.tokens = {
            scope: self.store.keys.create(f"v1-{scope}", [scope])[0]
            for scope in ("explain", "models:write", "audit:read")
        }

    def post(self, path: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens['explain']}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        response = self.client.post(path, json=body, headers=headers)
        assert response.status_code == 200, (path, response.get_data()[:500])
        return response.get_json()  # type: ignore[no-any-return]

    def install_models(self, tiny_bert: Path) -> None:
        from tiny_text import tiny_manifest

        from api.demo import install_demos, loan_model
        from model_store.manifest import parse_manifest
        from model_store.reference import to_parquet
        from model_store.safe_load import dump_skops

        install_demos(self.store.registry, names=("loan",))
        manifest, pipeline, reference = loan_model()
        hashed = parse_manifest({**manifest, "store_inputs": "hash"})
        version = self.store.registry.register_tabular(hashed, dump_skops(pipeline), to_parquet(reference))
        assert version.version == 2
        response = self.client.post(
            "/v1/models/triage/versions",
            data={
                "manifest": json.dumps(tiny_manifest()),
                "artifact": (io.BytesIO(tar_of(tiny_bert)), "model.tar.gz"),
            },
            headers={"Authorization": f"Bearer {self.tokens['models:write']}"},
            content_type="multipart/form-data",
        )
        assert response.status_code == 201, response.get_json()

    def before_purge(self) -> dict[str, Any]:
        """Three records, then a purge of all of them as ``candor audit purge`` does it (the records, then
        the blobs only they referred to): the chain then starts with a checkpoint record."""
        from model_store.audit_blobs import AuditBlobs

        self.post(f"{LOAN}/explain/shap", {"instances": loan_rows(1)})
        self.post(f"{LOAN}/explain/reasons", {"instances": [declined_row()]})
        self.post(f"{TRIAGE}/explain/attention", {"instances": [{"text": PURGED_TEXT}]})
        time.sleep(0.05)
        before = dt.datetime.now(dt.UTC)
        time.sleep(0.05)
        outcome: dict[str, Any] = self.store.audit.purge(before)
        assert outcome["purged"] == 3, outcome
        outcome["blobs_collected"] = AuditBlobs(self.store.sessions).collect(self.store.audit)
        assert outcome["blobs_collected"] == 4, outcome  # the purged attention record's 2 layers x 2 heads
        return outcome

    def after_purge(self) -> None:
        self.post(f"{LOAN}/explain/shap", {"instances": loan_rows(2), "top_k": 5})
        first = self.post(f"{LOAN}/explain/shap", {"instances": loan_rows(1, 5)}, key="v1-fixture-retry")
        again = self.post(f"{LOAN}/explain/shap", {"instances": loan_rows(1, 5)}, key="v1-fixture-retry")
        assert again["id"] == first["id"]
        self.post(
            f"{LOAN}/explain/counterfactuals", {"instances": [declined_row()], "total_cfs": 2, "seed": 7}
        )
        self.post(f"{LOAN}/explain/reasons", {"instances": [declined_row()]})
        self.post("/v1/models/loan:explain", {"instances": loan_rows(1, 3)})
        self.post(f"{TRIAGE}/explain/attention", {"instances": [{"text": t} for t in TEXTS], "rollout": True})
        self.post(f"{TRIAGE}/explain/attributions", {"instances": [{"text": TEXTS[0]}], "n_steps": 8})
        self.post("/v1/models/loan/versions/2/explain/shap", {"instances": loan_rows(2, 10)})
        self.run_job()
        self.post(f"{LOAN}/explain/shap", {"instances": loan_rows(1, 20)})

    def run_job(self) -> None:
        from api.demo import german_credit
        from api.jobs.runner import Runner

        frame = german_credit().drop(columns=["creditability"]).iloc[30:33]
        form = {
            "model": "loan",
            "version": "1",
            "kind": "shap",
            "options": json.dumps({"top_k": 3}),
            "file": (io.BytesIO(frame.to_csv(index=False).encode()), "rows.csv"),
        }
        headers = {"Authorization": f"Bearer {self.tokens['explain']}"}
        submitted = self.client.post(
            "/v1/jobs", data=form, headers=headers, content_type="multipart/form-data"
        )
        assert submitted.status_code == 202, submitted.get_data()
        context = self.app.extensions["candor"]
        assert Runner(context.settings, store=context.store).run(once=True) == 1
        status = self.client.get(f"/v1/jobs/{submitted.get_json()['id']}", headers=headers).get_json()
        assert status["status"] == "succeeded" and status["progress"]["rows_done"] == 3, status

    def verify(self) -> dict[str, Any]:
        from model_store.audit_blobs import verify_trail

        verdict: dict[str, Any] = verify_trail(self.store.audit, self.store.sessions)
        assert verdict["ok"] and verdict["blobs"]["first_break"] is None, verdict
        return verdict


def fill(data_dir: Path, url: str, tiny_bert: Path) -> dict[str, Any]:
    maker = Maker(data_dir, url)
    try:
        maker.install_models(tiny_bert)
        purge = maker.before_purge()
        maker.after_purge()
        verdict = maker.verify()
        print(f"  purge: {purge}; verify: checked {verdict['checked']}, blobs {verdict['blobs']}")
        return {"purge": purge, **expected_of(maker.store.engine, verdict)}
    finally:
        maker.store.close()


def expected_of(engine: sa.Engine, verdict: dict[str, Any]) -> dict[str, Any]:
    """What the database holds, read with plain SQL (independent of the release's reading code)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT seq, id, kind, model_name, model_version, key_id, status, prev_hash, hash, body "
                "FROM explanation_records ORDER BY seq"
            )
        ).all()
        head = connection.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
        blobs = connection.execute(
            sa.text("SELECT sha256, size, data FROM audit_blobs ORDER BY sha256")
        ).all()
        keys = connection.execute(
            sa.text(
                "SELECT key_id, idempotency_key, request_sha256, record_id FROM explain_idempotency "
                "ORDER BY key_id, idempotency_key"
            )
        ).all()
        revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        jobs = connection.execute(sa.text("SELECT id, status, total_rows FROM jobs ORDER BY id")).all()
    records = [record_of(row) for row in rows]
    assert verdict["checked"] == len(records) and verdict["head"]["seq"] == head.seq
    for blob in blobs:
        assert (
            hashlib.sha256(bytes(blob.data)).hexdigest() == blob.sha256 and len(bytes(blob.data)) == blob.size
        )
    return {
        "alembic_revision": revision,
        "head": {"seq": head.seq, "hash": head.hash},
        "records": records,
        "blobs": [{"sha256": b.sha256, "size": b.size} for b in blobs],
        "explain_idempotency": [dict(k._mapping) for k in keys],
        "jobs": [dict(j._mapping) for j in jobs],
        "models": sorted(
            {(r["model_name"], r["model_version"]) for r in records if r["model_name"] is not None}
        ),
    }


def record_of(row: Any) -> dict[str, Any]:
    body = json.loads(row.body)
    source = body.get("source") or {}
    refs = sorted(set(_blob_refs(body)))
    return {
        "seq": row.seq,
        "id": row.id,
        "kind": row.kind,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "key_id": row.key_id,
        "status": row.status,
        "source_type": source.get("type"),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "body_sha256": hashlib.sha256(row.body.encode()).hexdigest(),
        "blob_sha256s": refs,
        "inputs": "hash" if "instances_sha256" in (body.get("request") or {}) else "full",
    }


def _blob_refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["blob_sha256"]] if isinstance(value.get("blob_sha256"), str) else []
        return found + [sha for v in value.values() for sha in _blob_refs(v)]
    if isinstance(value, list):
        return [sha for v in value for sha in _blob_refs(v)]
    return []


def make_sqlite(tiny_bert: Path, work: Path) -> dict[str, Any]:
    print("sqlite:")
    data = work / "sqlite-data"
    expected = fill(data, f"sqlite:///{data / 'candor.db'}", tiny_bert)
    target = HERE / "candor-v1.db"
    target.unlink(missing_ok=True)
    with sqlite3.connect(data / "candor.db") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("VACUUM INTO ?", (str(target),))
    with sqlite3.connect(target) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    print(f"  wrote {target.name}: {target.stat().st_size} bytes")
    return expected


def make_postgres(tiny_bert: Path, work: Path, server_url: str) -> dict[str, Any]:
    print("postgres:")
    name = "candor_v1_" + uuid.uuid4().hex[:10]
    base = server_url.rsplit("/", 1)[0]
    admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        expected = fill(work / "pg-data", f"{base}/{name}", tiny_bert)
        plain = sa.engine.make_url(f"{base}/{name}").set(drivername="postgresql")
        libpq = plain.render_as_string(hide_password=False)
        target = HERE / "candor-v1-postgres.sql"
        with target.open("wb") as out:
            subprocess.run(["pg_dump", "--no-owner", "--no-privileges", libpq], stdout=out, check=True)
        print(f"  wrote {target.name}: {target.stat().st_size} bytes")
    finally:
        admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    check_restore(server_url, target)
    return expected


def check_restore(server_url: str, dump: Path) -> None:
    """psql restores the dump into an empty database without an error."""
    name = "candor_v1r_" + uuid.uuid4().hex[:10]
    admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        url = sa.engine.make_url(server_url.rsplit("/", 1)[0] + "/" + name).set(drivername="postgresql")
        command = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), url.render_as_string(False)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        print("  restored with psql into an empty database: ok")
    finally:
        admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin(server_url: str, statement: str) -> None:
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def main() -> None:
    check_release()
    server_url = os.environ.get("CANDOR_TEST_POSTGRES_URL", "")
    if not server_url:
        sys.exit("set CANDOR_TEST_POSTGRES_URL (a PostgreSQL server to make the second database on)")
    import torch
    from tiny_text import build_tiny_bert

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny_bert = build_tiny_bert(work / "tiny-bert")
        expected = {
            "made_by": "tests/data/v1-audit/make_v1.py with the code of 55b3615",
            "sqlite": make_sqlite(tiny_bert, work),
            "postgres": make_postgres(tiny_bert, work, server_url),
        }
        shutil.rmtree(work / "sqlite-data", ignore_errors=True)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, default=str) + "\n")
    print("wrote expected.json")


if __name__ == "__main__":
    main()

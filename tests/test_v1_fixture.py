"""The v1 audit fixture (tests/data/v1-audit, made by the release 55b3615's own service): the SQLite file
and the PostgreSQL dump (restored by psql into a fresh database) open, their hash chain and blobs verify, and
they hold exactly the records, head, blobs and idempotency keys listed in expected.json. Read with plain SQL
here, so expected.json is checked against the bytes, not against the code that reads them."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import BACKENDS, DATA, POSTGRES_URL, _admin_execute

from model_store.audit_blobs import verify_trail
from model_store.store import Store

FIXTURE = DATA / "v1-audit"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
KINDS = {"checkpoint", "shap", "counterfactuals", "reasons", "attention", "attributions"}


def restored_postgres() -> Iterator[str]:
    """A fresh database with the dump restored into it by psql (dropped afterwards)."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    name = "candor_v1_" + uuid.uuid4().hex[:12]
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        libpq = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        dump = str(FIXTURE / "candor-v1-postgres.sql")
        command = ["psql", "-q", "-X", "-v", "ON_ERROR_STOP=1", "-f", dump, libpq]
        restore = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert restore.returncode == 0, restore.stderr
        yield url
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def v1(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, database URL) of a private copy of that backend's v1 database."""
    if request.param == "sqlite":
        shutil.copyfile(FIXTURE / "candor-v1.db", tmp_path / "candor.db")
        yield "sqlite", f"sqlite:///{tmp_path / 'candor.db'}"
        return
    yield from (("postgres", url) for url in restored_postgres())


def blob_refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["blob_sha256"]] if isinstance(value.get("blob_sha256"), str) else []
        return found + [sha for v in value.values() for sha in blob_refs(v)]
    if isinstance(value, list):
        return [sha for v in value for sha in blob_refs(v)]
    return []


def record_of(row: Any) -> dict[str, Any]:
    body = json.loads(row.body)
    return {
        "seq": row.seq,
        "id": row.id,
        "kind": row.kind,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "key_id": row.key_id,
        "status": row.status,
        "source_type": (body.get("source") or {}).get("type"),
        "prev_hash": row.prev_hash,
        "hash": row.hash,
        "body_sha256": hashlib.sha256(row.body.encode()).hexdigest(),
        "blob_sha256s": sorted(set(blob_refs(body))),
        "inputs": "hash" if "instances_sha256" in (body.get("request") or {}) else "full",
    }


def contents(url: str) -> dict[str, Any]:
    """What the database holds, in expected.json's terms, read with plain SQL."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM explanation_records ORDER BY seq")).all()
            head = connection.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
            blobs = connection.execute(sa.text("SELECT sha256, size, data FROM audit_blobs ORDER BY sha256"))
            blob_list = [(b.sha256, b.size, hashlib.sha256(bytes(b.data)).hexdigest()) for b in blobs]
            keys = connection.execute(
                sa.text(
                    "SELECT key_id, idempotency_key, request_sha256, record_id FROM explain_idempotency "
                    "ORDER BY key_id, idempotency_key"
                )
            ).all()
            revision = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()
    assert all(sha == digest for sha, _, digest in blob_list), "a blob's key is the sha256 of its bytes"
    return {
        "alembic_revision": revision,
        "head": {"seq": head.seq, "hash": head.hash},
        "records": [record_of(row) for row in rows],
        "blobs": [{"sha256": sha, "size": size} for sha, size, _ in blob_list],
        "explain_idempotency": [dict(key._mapping) for key in keys],
    }


def test_the_v1_database_holds_what_expected_json_lists(v1: tuple[str, str]) -> None:
    backend, url = v1
    expected = EXPECTED[backend]
    found = contents(url)
    assert found["alembic_revision"] == expected["alembic_revision"] == "0007"
    assert found == {key: expected[key] for key in found}


def test_the_v1_chain_verifies_with_this_code(v1: tuple[str, str], tmp_path: Path) -> None:
    backend, url = v1
    expected = EXPECTED[backend]
    store = Store(tmp_path / "data", url, migrate=False)
    try:
        verdict = verify_trail(store.audit, store.sessions)
        assert verdict["ok"], verdict["first_break"]
        assert verdict["checked"] == len(expected["records"])
        assert verdict["head"] == expected["head"]
        assert verdict["blobs"]["distinct"] == len(expected["blobs"])
        for record in expected["records"]:
            assert store.audit.get(record["id"])["hash"] == record["hash"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_expected_json_covers_what_the_migration_must_carry(backend: str) -> None:
    """The fixture has each case the brief asks for: a chain starting after 1 with a checkpoint, every kind,
    attention blobs, hashed inputs, job rows, and an idempotency key naming a record that remains."""
    expected = EXPECTED[backend]
    records = expected["records"]
    first = records[0]
    assert first["kind"] == "checkpoint" and first["seq"] == expected["purge"]["purged"] + 1 > 1
    assert [r["seq"] for r in records] == list(range(first["seq"], expected["head"]["seq"] + 1))
    assert all(r["hash"] == r["body_sha256"] for r in records)
    assert [r["prev_hash"] for r in records[1:]] == [r["hash"] for r in records[:-1]]
    assert {r["kind"] for r in records} == KINDS
    referenced = {sha for r in records for sha in r["blob_sha256s"]}
    assert referenced == {b["sha256"] for b in expected["blobs"]} and len(referenced) >= 8
    assert any(r["inputs"] == "hash" for r in records)
    assert (
        sum(r["source_type"] == "job" for r in records) == sum(j["total_rows"] for j in expected["jobs"]) >= 3
    )
    ids = {r["id"] for r in records}
    assert expected["explain_idempotency"] and all(
        k["record_id"] in ids for k in expected["explain_idempotency"]
    )
    assert {(r["model_name"], r["model_version"]) for r in records if r["model_name"]} == {
        tuple(m) for m in expected["models"]
    }


def test_a_changed_byte_in_the_v1_file_is_a_break(tmp_path: Path) -> None:
    """The verdict above is not vacuous: the same file with one record's body changed does not verify."""
    shutil.copyfile(FIXTURE / "candor-v1.db", tmp_path / "candor.db")
    url = f"sqlite:///{tmp_path / 'candor.db'}"
    target = EXPECTED["sqlite"]["records"][5]
    store = Store(tmp_path / "data", url, migrate=False)
    try:
        with store.engine.begin() as connection:
            connection.execute(
                sa.text(
                    'UPDATE explanation_records SET body = replace(body, \'"status":"ok"\', '
                    '\'"status":"OK"\') WHERE seq = :seq'
                ),
                {"seq": target["seq"]},
            )
        verdict = verify_trail(store.audit, store.sessions)
        assert not verdict["ok"] and verdict["first_break"]["seq"] == target["seq"], verdict
    finally:
        store.close()

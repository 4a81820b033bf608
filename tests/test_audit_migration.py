"""Migration 0008 on the v1 audit fixture (tests/data/v1-audit, made by the release 55b3615's own service):
the SQLite file and the PostgreSQL dump (restored by psql into a fresh database) first hold exactly what
expected.json lists; then ``Store`` upgrades a private copy to the log and every v1 record is a leaf in chain
order, with its bytes, hash and reading unchanged, provable against the root; a broken v1 chain is refused and
leaves the database as it was. The v1 side is read with plain SQL and the tree checked with
``candor_verify.merkle`` directly, so the oracles do not depend on the code under test."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import DATA, POSTGRES_URL, _admin_execute, bearer

from api.http.app import create_app
from candor_verify import merkle
from model_store.audit import RecordDraft
from model_store.audit_blobs import verify_trail
from model_store.store import Store

FIXTURE = DATA / "v1-audit"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
KINDS = {"checkpoint", "shap", "counterfactuals", "reasons", "attention", "attributions"}
BACKENDS = ["sqlite", "postgres"]  # never skipped: CI has PostgreSQL and psql
LOG_TABLES = {"explanation_records", "audit_head", "alembic_version"}
"""The tables the migration changes; every other table must keep its rows."""


# -- the v1 databases ---------------------------------------------------------------------------------------


def restored_postgres() -> Iterator[str]:
    """A fresh database with the dump restored into it by psql (dropped afterwards)."""
    if not POSTGRES_URL:
        pytest.fail("CANDOR_TEST_POSTGRES_URL is not set: the v1 PostgreSQL fixture needs a server")
    if shutil.which("psql") is None:
        pytest.fail(
            "psql is not installed: it restores the v1 PostgreSQL dump (apt-get install postgresql-client)"
        )
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


def query(url: str, statement: str, **params: Any) -> list[Any]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.text(statement), params).all())
    finally:
        engine.dispose()


def execute(url: str, statement: str, **params: Any) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement), params)
    finally:
        engine.dispose()


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
    rows = query(url, "SELECT * FROM explanation_records ORDER BY seq")
    head = query(url, "SELECT seq, hash FROM audit_head WHERE id = 1")[0]
    blobs = query(url, "SELECT sha256, size, data FROM audit_blobs ORDER BY sha256")
    keys = query(
        url,
        "SELECT key_id, idempotency_key, request_sha256, record_id FROM explain_idempotency "
        "ORDER BY key_id, idempotency_key",
    )
    revision = query(url, "SELECT version_num FROM alembic_version")[0][0]
    assert all(b.sha256 == hashlib.sha256(bytes(b.data)).hexdigest() for b in blobs), (
        "a blob's key is its sha256"
    )
    return {
        "alembic_revision": revision,
        "head": {"seq": head.seq, "hash": head.hash},
        "records": [record_of(row) for row in rows],
        "blobs": [{"sha256": b.sha256, "size": b.size} for b in blobs],
        "explain_idempotency": [dict(key._mapping) for key in keys],
    }


def dump(url: str, skip: Collection[str] = ()) -> dict[str, Any]:
    """Every table's columns and rows (sorted), read with plain SQL: what "unchanged" is compared on."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        tables = sorted(set(inspector.get_table_names()) - set(skip))
        found: dict[str, Any] = {}
        with engine.connect() as connection:
            for table in tables:
                columns = [column["name"] for column in inspector.get_columns(table)]
                rows = connection.execute(sa.text(f'SELECT * FROM "{table}"')).all()
                found[table] = (columns, sorted(repr(tuple(row)) for row in rows))
        return found
    finally:
        engine.dispose()


def v1_records(url: str) -> list[Any]:
    """The v1 records (seq, id, hash, body) in chain order, read before migrating."""
    return query(url, "SELECT seq, id, hash, body FROM explanation_records ORDER BY seq")


def old_reading(row: Any) -> dict[str, Any]:
    """What release 55b3615 answered for a record (``full_record``: its stored body plus its hash)."""
    return {**json.loads(row.body), "hash": row.hash}


def leaf_of(row: Any) -> bytes:
    return hashlib.sha256(b"\x00" + row.body.encode()).digest()


# -- the fixture as it stands --------------------------------------------------------------------------------


def test_the_v1_database_holds_what_expected_json_lists(v1: tuple[str, str]) -> None:
    backend, url = v1
    expected = EXPECTED[backend]
    found = contents(url)
    assert found["alembic_revision"] == expected["alembic_revision"] == "0007"
    assert found == {key: expected[key] for key in found}


@pytest.mark.parametrize("backend", BACKENDS)
def test_expected_json_covers_what_the_migration_must_carry(backend: str) -> None:
    """The fixture has each case the migration must carry: a chain starting after 1 with a checkpoint, every
    kind, attention blobs, hashed inputs, job rows, and an idempotency key naming a record that remains."""
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


# -- the migration -------------------------------------------------------------------------------------------


def test_every_v1_record_becomes_a_leaf_in_chain_order(v1: tuple[str, str], tmp_path: Path) -> None:
    backend, url = v1
    before, others = v1_records(url), dump(url, skip=LOG_TABLES)
    assert [row.seq for row in before] == [r["seq"] for r in EXPECTED[backend]["records"]]
    store = Store(tmp_path / "data", url)
    try:
        after = query(
            url, "SELECT seq, id, prev_hash, hash, body, leaf_index, leaf_hash FROM explanation_records"
        )
        after.sort(key=lambda row: row.seq)
        leaves = [leaf_of(row) for row in before]
        assert query(url, "SELECT version_num FROM alembic_version")[0][0] == "0010"
        assert [(r.seq, r.id, r.hash, r.body) for r in after] == [tuple(r) for r in before], (
            "v1 rows unchanged"
        )
        assert [r.prev_hash for r in after] == [r["prev_hash"] for r in EXPECTED[backend]["records"]]
        assert [r.leaf_index for r in after] == list(range(len(before)))
        assert [bytes.fromhex(r.leaf_hash) for r in after] == leaves
        assert store.audit_log.head() == {"tree_size": len(before), "root": merkle.root(leaves).hex()}
        stored = query(url, 'SELECT "index", hash FROM audit_tree ORDER BY "index"')
        assert [r[0] for r in stored] == list(range(merkle.stored_hash_count(len(before))))
        verdict = verify_trail(store.audit_log)
        assert verdict["ok"], verdict["first_break"]
        assert verdict["checked"] == len(before)
        assert verdict["blobs"]["distinct"] == len(EXPECTED[backend]["blobs"])
        assert verdict["blobs"]["checked"] == sum(
            len(r["blob_sha256s"]) for r in EXPECTED[backend]["records"]
        )
        now = dump(url, skip=LOG_TABLES)
        assert set(now) - set(others) == {  # 0008's tables and the later migrations'
            "audit_tree",
            "audit_checkpoints",
            "audit_parts",
            "audit_chunks",
            "job_chunks",
            "artifact_parts",  # 0009: the database artifact store
            "job_inputs",  # 0010: a job's input rows
        }
        columns, rows = others.pop("model_versions")
        assert now["model_versions"][0] == [*columns, "artifact_files"], "0009: versions name their files"
        legacy = query(url, f"SELECT {', '.join(columns)} FROM model_versions")
        assert sorted(repr(tuple(row)) for row in legacy) == rows
        assert {table: now[table] for table in others} == others, "blobs, idempotency keys, jobs... untouched"
    finally:
        store.close()


def test_v1_records_read_as_the_old_code_returned_them(v1: tuple[str, str], tmp_path: Path) -> None:
    _, url = v1
    before = v1_records(url)
    store = Store(tmp_path / "data", url)
    try:
        for index, row in enumerate(before):
            assert store.audit.get(row.id) == {**old_reading(row), "leaf_index": index}
            assert store.audit_log.leaf(row.id) == (index, leaf_of(row))
    finally:
        store.close()


def test_each_v1_record_is_provable_against_the_root(v1: tuple[str, str], tmp_path: Path) -> None:
    _, url = v1
    before = v1_records(url)
    size = len(before)
    store = Store(tmp_path / "data", url)
    try:
        root = bytes.fromhex(store.audit_log.head()["root"])
        for index, row in enumerate(before):
            proof = store.audit_log.inclusion(index, size)
            assert merkle.verify_inclusion(index, size, leaf_of(row), proof, root)
            other = leaf_of(before[(index + 1) % size])
            assert not merkle.verify_inclusion(index, size, other, proof, root)
    finally:
        store.close()


def draft(index: int) -> RecordDraft:
    content = {"explanation": {"value": index * 0.5}, "request": {"instances": [index]}}
    return RecordDraft(f"after-v1-{index}", "shap", "loan", 1, "k1", "ok", content)


def test_records_appended_after_the_migration_follow_the_v1_leaves(
    v1: tuple[str, str], tmp_path: Path
) -> None:
    _, url = v1
    before = v1_records(url)
    size = len(before)
    store = Store(tmp_path / "data", url)
    try:
        old_root = bytes.fromhex(store.audit_log.head()["root"])
        store.audit.append([draft(0), draft(1)])
        store.audit.append([draft(2)])
        assert store.audit_log.integrate() == size + 3
        new = "SELECT seq, body, leaf_index FROM explanation_records WHERE id LIKE 'after-v1-%' ORDER BY id"
        rows = query(url, new)
        assert [r.leaf_index for r in rows] == [size, size + 1, size + 2]
        assert min(r.seq for r in rows) > before[-1].seq
        leaves = [leaf_of(row) for row in before + rows]
        root = merkle.root(leaves)
        assert store.audit_log.head() == {"tree_size": size + 3, "root": root.hex()}
        proof = store.audit_log.consistency(size, size + 3)
        assert merkle.verify_consistency(size, size + 3, old_root, root, proof)
        verdict = verify_trail(store.audit_log)
        assert verdict["ok"] and verdict["checked"] == size + 3, verdict
        assert store.audit.get(before[0].id) == {**old_reading(before[0]), "leaf_index": 0}
    finally:
        store.close()


def _change_a_byte(url: str, rows: list[Any]) -> Any:
    target = rows[5]
    execute(
        url,
        "UPDATE explanation_records SET body = replace(body, :old, :new) WHERE seq = :seq",
        old='"status":"ok"',
        new='"status":"OK"',
        seq=target.seq,
    )
    return target


def _delete(position: int) -> Callable[[str, list[Any]], Any]:
    def delete(url: str, rows: list[Any]) -> Any:
        execute(url, "DELETE FROM explanation_records WHERE seq = :seq", seq=rows[position].seq)
        return rows[position]

    return delete


def _rehash_a_changed_body(url: str, rows: list[Any]) -> Any:
    """A record changed and its hash recomputed: the next record's link no longer holds."""
    target = rows[5]
    body = target.body.replace('"status":"ok"', '"status":"OK"')
    digest = hashlib.sha256(body.encode()).hexdigest()
    execute(
        url,
        "UPDATE explanation_records SET body = :body, hash = :h WHERE seq = :seq",
        body=body,
        h=digest,
        seq=target.seq,
    )
    return rows[6]


def _change_the_head(url: str, rows: list[Any]) -> Any:
    execute(url, "UPDATE audit_head SET hash = :h WHERE id = 1", h="0" * 64)
    return rows[-1]


BREAKS = {
    "a changed byte": (_change_a_byte, r"v1 record {seq} \({id}\): its body does not match its hash"),
    "a deleted record": (_delete(6), "v1 record {seq} is missing"),
    "the deleted checkpoint": (_delete(0), "v1 records before {next} are missing"),
    "the deleted last record": (_delete(-1), "ends at record {before}, not at its recorded head {seq}"),
    "a rehashed change": (
        _rehash_a_changed_body,
        r"v1 record {seq} \({id}\) does not link to the record before",
    ),
    "a changed head": (_change_the_head, "v1 record {seq}'s hash differs from the chain's recorded head"),
}


@pytest.mark.parametrize("case", BREAKS)
def test_a_broken_v1_chain_is_refused_and_left_as_it_was(
    v1: tuple[str, str], tmp_path: Path, case: str
) -> None:
    _, url = v1
    rows = v1_records(url)
    breaking, message = BREAKS[case]
    broken = breaking(url, rows)
    unchanged = dump(url)
    with pytest.raises(Exception) as refused:  # Alembic loads the migration: its class is known by name
        Store(tmp_path / "data", url).close()
    assert type(refused.value).__name__ == "ChainBroken"
    assert refused.match("^The v1 audit chain does not verify, so nothing was migrated: ")
    assert refused.match(
        message.format(seq=broken.seq, id=broken.id, next=broken.seq + 1, before=broken.seq - 1)
    )
    assert dump(url) == unchanged
    assert query(url, "SELECT version_num FROM alembic_version")[0][0] == "0007"


def test_a_migration_failing_part_way_leaves_the_database_as_it_was(
    v1: tuple[str, str], tmp_path: Path
) -> None:
    """A table in the way (left over, say) fails the migration after it has added columns and tables: all of
    it is rolled back, on SQLite too, so it can be rerun once the obstacle is gone."""
    _, url = v1
    execute(url, "CREATE TABLE audit_parts (obstacle INTEGER)")
    unchanged = dump(url)
    with pytest.raises(sa.exc.DatabaseError, match="audit_parts"):
        Store(tmp_path / "data", url).close()
    assert dump(url) == unchanged
    execute(url, "DROP TABLE audit_parts")
    store = Store(tmp_path / "data", url)
    try:
        assert verify_trail(store.audit_log)["ok"]
    finally:
        store.close()


def test_the_api_answers_v1_records_as_before(v1: tuple[str, str], tmp_path: Path) -> None:
    _, url = v1
    before = v1_records(url)
    app = create_app({"data_dir": tmp_path / "data", "database_url": url})
    try:
        token = app.extensions["candor"].store.keys.create("auditor", ["audit:read"])[0]
        client = app.test_client()
        for index, row in enumerate(before):
            answer = client.get(f"/v1/explanations/{row.id}", headers=bearer(token))
            assert answer.status_code == 200, answer.get_json()
            assert answer.get_json() == {**old_reading(row), "leaf_index": index}
    finally:
        app.extensions["candor"].store.close()

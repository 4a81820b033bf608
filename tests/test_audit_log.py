"""The audit log: records are leaves of an RFC 9162 Merkle tree, integrated in one short transaction,
proved against signed checkpoints, verified from their stored bytes, purged without breaking the tree.

The oracle for every root and proof is ``candor_verify.merkle`` computed from the exported stored bytes
alone (the leaf hashes recomputed, the root over them from the leaves), and the signed checkpoint is opened
with the verifier key the server serves."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from conftest import bearer
from flask import Flask
from flask.testing import FlaskClient
from test_audit import LOAN, loan_rows

from candor_verify import merkle
from candor_verify.checkpoint import open_checkpoint
from candor_verify.note import Verifier, generate
from model_store.audit import RecordDraft
from model_store.audit_verify import verify_log
from model_store.errors import NotFound
from model_store.store import Store
from model_store.tables import utcnow

PROBLEM = "application/problem+json"


def draft(index: int, model: str = "loan") -> RecordDraft:
    return RecordDraft(
        id=f"rec-{index}",
        kind="shap",
        model_name=model,
        model_version=1,
        key_id="k1",
        status="ok",
        content={"explanation": {"value": index * 0.5}, "request": {"instances": [index]}},
    )


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def explain(client: FlaskClient, keys: dict[str, str], rows: int = 3) -> list[dict[str, Any]]:
    made = []
    for row in loan_rows(rows):
        response = client.post(
            f"{LOAN}/explain/shap", json={"instances": [row]}, headers=bearer(keys["explain"])
        )
        assert response.status_code == 200, response.get_json()
        made.append(response.get_json())
    return made


def export(client: FlaskClient, keys: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get("/v1/explanations/export", headers=bearer(keys["audit:read"]))
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def verifier(client: FlaskClient, keys: dict[str, str]) -> Verifier:
    response = client.get("/v1/audit/key", headers=bearer(keys["audit:read"]))
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return Verifier.from_key(response.get_data(as_text=True).strip())


def checkpoint(client: FlaskClient, keys: dict[str, str]) -> Any:
    response = client.get("/v1/audit/checkpoint", headers=bearer(keys["audit:read"]))
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return open_checkpoint(response.get_data(as_text=True), verifier(client, keys))


# -- through the API --------------------------------------------------------------------------------------


def test_a_record_is_a_leaf_its_export_proves_and_the_signed_checkpoint_covers(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    made = explain(client, keys)
    lines = export(client, keys)
    records = [line for line in lines if "record" in line]
    parts = {line["part"]: b64(line["stored"]) for line in lines if "part" in line}
    assert [line["record"]["id"] for line in records] == [e["id"] for e in made]
    leaves = []
    for line in records:
        stored = b64(line["stored"])
        leaf = merkle.leaf_hash(stored)
        assert b64(line["leaf_hash"]) == leaf and line["record"]["hash"] == leaf.hex()
        body = orjson.loads(stored)
        for digest in body["parts"].values():  # every part it names is exported, and hashes to its name
            assert merkle.hashlib.sha256(parts[digest]).hexdigest() == digest
        leaves.append(leaf)
    assert [line["leaf_index"] for line in records] == list(range(len(made)))
    signed = checkpoint(client, keys)
    assert signed.size == len(made) and signed.root == merkle.root(leaves)
    for index, line in enumerate(records):
        proof = client.get(
            f"/v1/explanations/{line['record']['id']}/proof", headers=bearer(keys["audit:read"])
        ).get_json()
        assert proof["leaf_index"] == index and proof["tree_size"] == signed.size
        assert open_checkpoint(proof["checkpoint"], verifier(client, keys)) == signed
        path = [b64(node) for node in proof["inclusion_path"]]
        assert merkle.verify_inclusion(index, signed.size, leaves[index], path, signed.root)


def test_the_record_reads_as_the_client_got_it_with_its_parts_stored_once(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    made = explain(client, keys, rows=2)
    store: Store = app.extensions["candor"].store
    for envelope in made:
        record = client.get(
            f"/v1/explanations/{envelope['id']}", headers=bearer(keys["audit:read"])
        ).get_json()
        assert record["explanation"] == envelope
        assert record["params"] == envelope["method"]["params"]
        assert record["library_versions"] == envelope["method"]["library_versions"]
        assert record["quality"] == envelope["quality"] and record["record_schema_version"] == "2.0"
    with store.engine.connect() as connection:
        bodies = [row.body for row in connection.execute(sa.text("SELECT body FROM explanation_records"))]
        part_count = connection.execute(sa.text("SELECT count(*) FROM audit_parts")).scalar()
    assert part_count == 5  # model, params, libraries, options, OOD detector: once for both records
    for body in bodies:  # the envelope once: no copy of params or library versions beside it
        assert body.count('"library_versions"') == 0 and body.count('"shap_version"') == 0


def test_consistency_between_two_checkpoints(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    explain(client, keys, rows=3)
    old = checkpoint(client, keys)
    explain(client, keys, rows=4)
    new = checkpoint(client, keys)
    assert (old.size, new.size) == (3, 7)
    answer = client.get(f"/v1/audit/consistency?from={old.size}", headers=bearer(keys["audit:read"]))
    proof = answer.get_json()
    assert proof["from"] == 3 and proof["to"] == 7
    path = [b64(node) for node in proof["consistency_path"]]
    assert merkle.verify_consistency(old.size, new.size, old.root, new.root, path)
    assert not merkle.verify_consistency(old.size, new.size, new.root, new.root, path)


@pytest.mark.parametrize(
    "query,field",
    [("from=0", "from"), ("from=9", "to"), ("from=2&to=1", "from"), ("to=2", "from"), ("from=x", "from")],
)
def test_bad_consistency_queries_are_422_naming_the_field(
    client: FlaskClient, keys: dict[str, str], query: str, field: str
) -> None:
    explain(client, keys, rows=2)
    answer = client.get(f"/v1/audit/consistency?{query}", headers=bearer(keys["audit:read"]))
    assert answer.status_code == 422 and answer.mimetype == PROBLEM
    assert field in json.dumps(answer.get_json())


def test_proofs_against_an_older_size_and_bad_sizes(client: FlaskClient, keys: dict[str, str]) -> None:
    made = explain(client, keys, rows=3)
    audit = bearer(keys["audit:read"])
    first = client.get(f"/v1/explanations/{made[0]['id']}/proof?tree_size=2", headers=audit).get_json()
    assert first["tree_size"] == 2 and len(first["inclusion_path"]) == 1
    for size in (1, 4, 0):
        bad = client.get(f"/v1/explanations/{made[1]['id']}/proof?tree_size={size}", headers=audit)
        assert bad.status_code == 422 and "tree_size" in json.dumps(bad.get_json())
    assert client.get("/v1/explanations/nope/proof", headers=audit).status_code == 404


def test_a_proof_uses_the_latest_checkpoint_holding_its_leaf_and_integrates_only_when_none_does(
    client: FlaskClient, keys: dict[str, str]
) -> None:
    audit = bearer(keys["audit:read"])
    made = explain(client, keys, rows=2)
    assert checkpoint(client, keys).size == 2
    made += explain(client, keys, rows=1)  # pending: the latest checkpoint (size 2) does not hold it
    old = client.get(f"/v1/explanations/{made[0]['id']}/proof", headers=audit).get_json()
    assert old["tree_size"] == 2  # the latest signed checkpoint holds leaf 0: no integration needed
    new = client.get(f"/v1/explanations/{made[2]['id']}/proof", headers=audit).get_json()
    signed = open_checkpoint(new["checkpoint"], verifier(client, keys))
    assert new["leaf_index"] == 2 and new["tree_size"] == signed.size == 3
    path = [b64(node) for node in new["inclusion_path"]]
    assert merkle.verify_inclusion(2, 3, b64(new["leaf_hash"]), path, signed.root)
    again = client.get(f"/v1/explanations/{made[0]['id']}/proof", headers=audit).get_json()
    assert again["tree_size"] == 3


def test_a_key_limited_to_another_model_gets_no_proof(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    made = explain(client, keys, rows=1)
    token, _ = app.extensions["candor"].store.keys.create("limited", ["audit:read"], models=["clinical"])
    answer = client.get(f"/v1/explanations/{made[0]['id']}/proof", headers=bearer(token))
    assert answer.status_code == 404


def test_without_a_signing_key_checkpoints_are_503_and_proofs_still_work(
    make_app: Any, tmp_path: Path
) -> None:
    app = make_app(audit_key_file=str(tmp_path / "no-such.key"))
    client = app.test_client()
    store: Store = app.extensions["candor"].store
    token, _ = store.keys.create("all", ["explain", "audit:read"])
    keys = {"explain": token, "audit:read": token}
    made = explain(client, keys, rows=2)
    for route in ("/v1/audit/checkpoint", "/v1/audit/key"):
        answer = client.get(route, headers=bearer(token))
        assert answer.status_code == 503 and answer.mimetype == PROBLEM
    proof = client.get(f"/v1/explanations/{made[1]['id']}/proof", headers=bearer(token)).get_json()
    assert proof["checkpoint"] is None and proof["tree_size"] == 2


# -- in the store -----------------------------------------------------------------------------------------


def test_integration_gives_leaves_in_the_order_written_and_the_root_of_rfc_9162(store: Store) -> None:
    store.audit.append([draft(i) for i in range(5)])
    store.audit.append([draft(5)])
    assert _column(store, "leaf_index") == [None] * 6  # written with no place yet
    assert store.audit_log.integrate() == 6
    assert _column(store, "leaf_index") == list(range(6))
    leaves = [merkle.leaf_hash(body.encode()) for body in _column(store, "body")]
    assert store.audit_log.head() == {"tree_size": 6, "root": merkle.root(leaves).hex()}
    store.audit.append([draft(6)])
    assert store.audit_log.integrate() == 7
    leaves.append(merkle.leaf_hash(_column(store, "body")[-1].encode()))
    assert store.audit_log.head()["root"] == merkle.root(leaves).hex()
    assert verify_log(store.audit_log)["ok"] is True


def test_concurrent_appenders_and_integrators_keep_one_tree(store: Store) -> None:
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            for i in range(10):
                store.audit.append([draft(worker * 100 + i), draft(worker * 100 + 50 + i)])
                if i % 3 == 0:
                    store.audit_log.integrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    verdict = verify_log(store.audit_log)
    assert verdict["ok"] is True and verdict["checked"] == 120 and verdict["head"]["tree_size"] == 120
    assert sorted(_column(store, "leaf_index")) == list(range(120))


@pytest.mark.parametrize("position", [0, 2, 4])
def test_one_changed_byte_in_a_record_is_found(store: Store, position: int) -> None:
    store.audit.append([draft(i) for i in range(5)])
    store.audit_log.integrate()
    body = _column(store, "body")[position]
    index = body.index('"value":') + len('"value":')
    changed = body[:index] + ("7" if body[index] != "7" else "8") + body[index + 1 :]
    _execute(store, "UPDATE explanation_records SET body = :b WHERE leaf_index = :i", b=changed, i=position)
    verdict = verify_log(store.audit_log)
    assert verdict["ok"] is False and verdict["first_break"]["leaf_index"] == position
    assert "leaf hash" in verdict["first_break"]["reason"] and verdict["checked"] == position


def test_a_rewritten_record_with_its_own_leaf_hash_is_found_by_the_root(store: Store) -> None:
    store.audit.append([draft(i) for i in range(3)])
    store.audit_log.integrate()
    body = _column(store, "body")[1].replace('"value":0.5', '"value":9.5')
    leaf = merkle.leaf_hash(body.encode()).hex()
    _execute(
        store,
        "UPDATE explanation_records SET body = :b, leaf_hash = :h, hash = :h WHERE leaf_index = 1",
        b=body,
        h=leaf,
    )
    verdict = verify_log(store.audit_log)
    assert verdict["ok"] is False and "root" in verdict["first_break"]["reason"]


@pytest.mark.parametrize(
    "statement,reason",
    [
        ("DELETE FROM explanation_records WHERE leaf_index = 1", "missing"),
        ("UPDATE explanation_records SET kind = 'reasons' WHERE leaf_index = 2", "columns"),
        ("UPDATE explanation_records SET leaf_index = 9 WHERE leaf_index = 3", "missing"),
        ("DELETE FROM explanation_records WHERE leaf_index = 3", "ends"),
        ("UPDATE audit_head SET hash = '00' WHERE id = 1", "head"),
    ],
)
def test_deleted_moved_or_changed_records_are_found(store: Store, statement: str, reason: str) -> None:
    store.audit.append([draft(i) for i in range(4)])
    store.audit_log.integrate()
    _execute(store, statement)
    verdict = verify_log(store.audit_log)
    assert verdict["ok"] is False and reason in verdict["first_break"]["reason"]


def test_purge_keeps_every_leaf_hash_so_the_tree_and_other_proofs_still_verify(store: Store) -> None:
    store.audit.append([draft(i) for i in range(4)])
    store.audit_log.integrate()
    root_before = store.audit_log.head()["root"]
    old = (utcnow() - dt.timedelta(days=3)).replace(tzinfo=None)
    _execute(store, "UPDATE explanation_records SET recorded_at = :t WHERE leaf_index < 2", t=old)
    # the verifier checks the time against the stored bytes: rewrite those two records' times in place
    assert store.audit.purge(utcnow() - dt.timedelta(days=1)) == {"purged": 2, "chunks": 0}
    assert _column(store, "body")[:2] == [None, None]
    assert store.audit_log.head()["root"] == root_before
    verdict = verify_log(store.audit_log)
    assert verdict["ok"] is True and verdict["checked"] == 4
    with pytest.raises(Exception, match="No explanation record"):
        store.audit.get("rec-0")
    with pytest.raises(NotFound):  # a purged record has no proof to ask for, as it has no record to read
        store.audit_log.leaf("rec-0")
    with pytest.raises(NotFound):  # nor one explaining a model outside the caller's allowlist
        store.audit_log.leaf("rec-3", frozenset({"clinical"}))
    assert store.audit_log.leaf("rec-3", frozenset({"loan"}))[0] == 3
    path = store.audit_log.inclusion(3, 4)
    leaf = merkle.leaf_hash(_column(store, "body")[3].encode())
    assert merkle.verify_inclusion(3, 4, leaf, path, bytes.fromhex(root_before))


def _column(store: Store, name: str) -> list[Any]:
    with store.engine.connect() as connection:
        query = f"SELECT {name} FROM explanation_records ORDER BY seq"
        return [row[0] for row in connection.execute(sa.text(query))]


def _execute(store: Store, statement: str, **params: Any) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def signing_key(path: Path, name: str = "candor.test/audit") -> Verifier:
    signer_key, verifier_key = generate(name)
    path.write_text(signer_key + "\n")
    return Verifier.from_key(verifier_key)

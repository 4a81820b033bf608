"""The audit trail: every explanation is recorded before its response, records form a hash chain that a
verifier walks (and that finds a one-byte change), they are read, listed, exported and replayed through the
API, never changed through it, and purged only behind a checkpoint that keeps the chain verifiable."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from conftest import DATA, bearer
from flask import Flask
from flask.testing import FlaskClient

from api.demo import german_credit, loan_model
from api.ops.cli import main as cli_main
from api.service.recording import request_sha256
from model_store.audit import RecordDraft, canonical_json, sha256_hex
GENESIS = "0" * 64
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store
from model_store.tables import utcnow

LOAN = "/v1/models/loan/versions/production"
PROBLEM = "application/problem+json"


def loan_rows(count: int = 2) -> list[dict[str, Any]]:
    """``count`` distinct loan applications (the sample request's, then rows of the demo data)."""
    frame = german_credit().drop(columns=["creditability"]).head(count)
    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def declined_row() -> dict[str, Any]:
    return json.loads((DATA / "loan_declined.json").read_text())["instances"][0]  # type: ignore[no-any-return]


def draft(index: int, kind: str = "shap", model: str = "loan") -> RecordDraft:
    return RecordDraft(
        id=f"rec-{index}",
        kind=kind,
        model_name=model,
        model_version=1,
        key_id="k1",
        status="ok",
        content={"explanation": {"value": index * 0.5}, "request": {"options": {}, "instances": [index]}},
    )


# -- recording through the API -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route,body",
    [
        ("explain/shap", {"instances": loan_rows()}),
        ("explain/counterfactuals", {"instances": [declined_row()], "total_cfs": 2, "seed": 7}),
        ("explain/reasons", {"instances": [declined_row()]}),
    ],
)
def test_every_explanation_is_recorded_with_what_an_auditor_needs(
    app: Flask, client: FlaskClient, keys: dict[str, str], route: str, body: dict[str, Any]
) -> None:
    response = client.post(f"{LOAN}/{route}", json=body, headers=bearer(keys["explain"]))
    assert response.status_code == 200, response.get_json()
    envelope = response.get_json()
    record = client.get(f"/v1/explanations/{envelope['id']}", headers=bearer(keys["audit:read"])).get_json()

    store = app.extensions["candor"].store
    info = store.registry.resolve("loan", "production")
    explain_key = store.keys.authenticate(keys["explain"])
    assert explain_key is not None
    assert record["id"] == envelope["id"]
    assert record["kind"] == route.split("/")[1]
    assert record["explanation"] == envelope  # the explanation exactly as the client got it
    assert record["model"] == {
        "name": "loan",
        "version": info.version,
        "artifact_sha256": info.artifact_sha256,
        "reference_sha256": info.reference_sha256,
    }
    assert record["key_id"] == explain_key.key_id
    options = {k: v for k, v in body.items() if k != "instances"}
    assert record["request"]["instances"] == body["instances"]
    assert record["request_sha256"] == request_sha256(body["instances"], record["request"]["options"])
    assert record["params"] == envelope["method"]["params"]
    assert record["seed"] == envelope["method"]["params"].get("seed")
    if "seed" in options:
        assert record["seed"] == options["seed"]
    assert record["library_versions"] == envelope["method"]["library_versions"]
    assert record["quality"] == envelope["quality"]
    assert record["service_version"] and record["status"] == "ok" and record["warnings"] == []
    assert record["hash"] == sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))


def test_kserve_explanations_are_recorded(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    response = client.post(
        "/v1/models/loan:explain", json={"instances": loan_rows(1)}, headers=bearer(keys["explain"])
    )
    assert response.status_code == 200
    record = app.extensions["candor"].store.audit.get(response.get_json()["id"])
    assert record["kind"] == "shap" and record["request"]["instances"] == loan_rows(1)


def test_failed_requests_leave_no_record(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    bad = client.post(
        f"{LOAN}/explain/shap", json={"instances": [{"nope": 1}]}, headers=bearer(keys["explain"])
    )
    assert bad.status_code == 422
    assert app.extensions["candor"].store.audit.head()["seq"] == 0


def test_store_inputs_hash_keeps_only_the_inputs_sha256_and_replay_needs_them(
    tmp_path: Path, client: FlaskClient, app: Flask, keys: dict[str, str]
) -> None:
    store = app.extensions["candor"].store
    manifest, pipeline, reference = loan_model()
    private = store.registry.register_tabular(
        parse_manifest({**manifest, "store_inputs": "hash"}), dump_skops(pipeline), to_parquet(reference)
    )
    rows = loan_rows()
    response = client.post(
        f"/v1/models/loan/versions/{private.version}/explain/shap",
        json={"instances": rows, "top_k": 3},
        headers=bearer(keys["explain"]),
    )
    assert response.status_code == 200
    record_id = response.get_json()["id"]
    record = store.audit.get(record_id)
    assert "instances" not in record["request"]
    assert record["request"]["instances_sha256"] == sha256_hex(canonical_json(rows))
    assert record["request"]["options"] == {"top_k": 3}
    assert json.dumps(rows[0]["purpose"]) not in json.dumps(record["request"])

    audit = bearer(keys["audit:read"])
    missing = client.post(f"/v1/explanations/{record_id}/replay", headers=audit)
    assert missing.status_code == 422 and "instances" in missing.get_json()["errors"]
    wrong = client.post(f"/v1/explanations/{record_id}/replay", json={"instances": rows[:1]}, headers=audit)
    assert wrong.status_code == 422 and "instances" in wrong.get_json()["errors"]
    right = client.post(f"/v1/explanations/{record_id}/replay", json={"instances": rows}, headers=audit)
    assert right.status_code == 200 and right.get_json()["identical"] is True


# -- the chain --------------------------------------------------------------------------------------------


def test_records_form_a_hash_chain(store: Store) -> None:
    store.audit.append([draft(i) for i in range(5)])
    store.audit.append([draft(5)])
    rows = _raw_rows(store)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    previous = GENESIS
    for row in rows:
        body = orjson.loads(row.body)
        assert row.prev_hash == previous == body["prev_hash"]
        assert row.hash == sha256_hex(row.body.encode())
        previous = row.hash
    verdict = store.audit.verify()
    assert verdict == {"ok": True, "checked": 6, "first_break": None, "head": {"seq": 6, "hash": previous}}


@pytest.mark.parametrize("position", [0, 2, 4])
def test_the_verifier_finds_one_changed_byte_in_a_body(store: Store, position: int) -> None:
    store.audit.append([draft(i) for i in range(5)])
    row = _raw_rows(store)[position]
    index = row.body.index('"value":') + len('"value":')
    changed = row.body[:index] + ("7" if row.body[index] != "7" else "8") + row.body[index + 1 :]
    _execute(store, "UPDATE explanation_records SET body = :b WHERE seq = :s", b=changed, s=row.seq)
    verdict = store.audit.verify()
    assert verdict["ok"] is False
    assert verdict["first_break"]["seq"] == row.seq
    assert verdict["first_break"]["id"] == row.id
    assert "hash" in verdict["first_break"]["reason"]
    assert verdict["checked"] == position


def test_a_recomputed_hash_does_not_hide_a_change(store: Store) -> None:
    """Rewriting a body and its own hash breaks the link of the record after it."""
    store.audit.append([draft(i) for i in range(3)])
    row = _raw_rows(store)[1]
    body = row.body.replace('"value":0.5', '"value":9.5')
    _execute(
        store,
        "UPDATE explanation_records SET body = :b, hash = :h WHERE seq = 2",
        b=body,
        h=sha256_hex(body.encode()),
    )
    verdict = store.audit.verify()
    assert verdict["ok"] is False and verdict["first_break"]["seq"] == 3
    assert "previous" in verdict["first_break"]["reason"]


@pytest.mark.parametrize(
    "statement,broken_seq",
    [
        ("UPDATE explanation_records SET kind = 'reasons' WHERE seq = 2", 2),
        ("UPDATE explanation_records SET model_name = 'clinical' WHERE seq = 3", 3),
        ("UPDATE explanation_records SET key_id = 'other' WHERE seq = 1", 1),
        ("DELETE FROM explanation_records WHERE seq = 2", 3),
        ("DELETE FROM explanation_records WHERE seq = 4", 4),
        ("DELETE FROM explanation_records WHERE seq = 1", 2),
        ("UPDATE explanation_records SET seq = 9 WHERE seq = 4", 9),
    ],
)
def test_the_verifier_finds_changed_columns_and_missing_records(
    store: Store, statement: str, broken_seq: int
) -> None:
    store.audit.append([draft(i) for i in range(4)])
    _execute(store, statement)
    verdict = store.audit.verify()
    assert verdict["ok"] is False
    assert verdict["first_break"]["seq"] == broken_seq


def append_concurrently(store: Store) -> list[BaseException]:
    """Six threads append ten pairs of records each; what they raised."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(10):
                store.audit.append([draft(worker * 100 + i), draft(worker * 100 + 50 + i)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_appenders_keep_one_unbroken_chain(store: Store) -> None:
    assert append_concurrently(store) == []
    verdict = store.audit.verify()
    assert verdict["ok"] is True and verdict["checked"] == 120 and verdict["head"]["seq"] == 120


@pytest.mark.parametrize("returning", [True, False], ids=["update-returning", "update-then-select"])
def test_the_chain_lock_reads_the_head_with_or_without_update_returning(
    store: Store, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """Where the database returns rows from an UPDATE (PostgreSQL, SQLite 3.35+) the lock and the head are
    one statement, else an UPDATE then a SELECT (an older SQLite): appends, concurrent ones and a purge
    keep one chain either way."""
    monkeypatch.setattr(store.engine.dialect, "update_returning", returning)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "audit_head" in statement:
            statements.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        append_concurrently(store)  # a failed append shows in the head count below
        store.audit.purge(utcnow() + dt.timedelta(seconds=1))
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    assert any("RETURNING" in s for s in statements) is returning
    assert any(s.lstrip().upper().startswith("SELECT") for s in statements) is not returning
    verdict = store.audit.verify()
    assert verdict["ok"] is True and verdict["head"]["seq"] == 121  # 120 records and the checkpoint


# -- reading through the API -----------------------------------------------------------------------------


@pytest.fixture
def recorded(app: Flask, client: FlaskClient, keys: dict[str, str]) -> list[dict[str, Any]]:
    """Five explanations: three SHAP, one reasons, one counterfactual (in that order)."""
    made = []
    for row in loan_rows(3):
        made.append(
            client.post(f"{LOAN}/explain/shap", json={"instances": [row]}, headers=bearer(keys["explain"]))
        )
    made.append(
        client.post(
            f"{LOAN}/explain/reasons", json={"instances": [declined_row()]}, headers=bearer(keys["explain"])
        )
    )
    made.append(
        client.post(
            f"{LOAN}/explain/counterfactuals",
            json={"instances": [declined_row()], "total_cfs": 2},
            headers=bearer(keys["explain"]),
        )
    )
    assert all(r.status_code == 200 for r in made)
    return [r.get_json() for r in made]


def test_listing_pages_through_every_record_with_a_cursor(
    client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/explanations{query}", headers=bearer(keys["audit:read"])).get_json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in recorded]
    assert pages == 3


@pytest.mark.parametrize(
    "query,expected",
    [
        ("kind=shap", [0, 1, 2]),
        ("kind=reasons", [3]),
        ("model=loan&version=1&kind=counterfactuals", [4]),
        ("model=clinical", []),
        ("version=2", []),
    ],
)
def test_listing_filters(
    client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]], query: str, expected: list[int]
) -> None:
    page = client.get(f"/v1/explanations?{query}", headers=bearer(keys["audit:read"])).get_json()
    assert [item["id"] for item in page["items"]] == [recorded[i]["id"] for i in expected]


def test_listing_filters_by_time(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    records = [app.extensions["candor"].store.audit.get(e["id"]) for e in recorded]
    middle = records[2]["recorded_at"]
    audit = bearer(keys["audit:read"])
    since = client.get(f"/v1/explanations?since={middle}", headers=audit).get_json()["items"]
    until = client.get(f"/v1/explanations?until={middle}", headers=audit).get_json()["items"]
    assert [i["id"] for i in since] == [e["id"] for e in recorded[2:]]
    assert [i["id"] for i in until] == [e["id"] for e in recorded[:2]]


@pytest.mark.parametrize(
    "query,field",
    [
        ("cursor=not-ours", "cursor"),
        ("version=abc", "version"),
        ("kind=poetry", "kind"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
    ],
)
def test_bad_listing_queries_are_422_naming_the_field(
    client: FlaskClient, keys: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"/v1/explanations?{query}", headers=bearer(keys["audit:read"]))
    assert response.status_code == 422 and response.mimetype == PROBLEM
    assert field in response.get_json()["errors"]


def test_export_streams_every_record_as_jsonl_and_csv(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    audit = bearer(keys["audit:read"])
    lines = client.get("/v1/explanations/export?kind=shap", headers=audit)
    assert lines.status_code == 200 and lines.mimetype == "application/x-ndjson"
    exported = [json.loads(line) for line in lines.get_data(as_text=True).splitlines()]
    assert [r["id"] for r in exported] == [e["id"] for e in recorded[:3]]
    store = app.extensions["candor"].store
    assert exported == [store.audit.get(e["id"]) for e in recorded[:3]]
    for record in exported:
        assert record["hash"] == sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))

    table = client.get("/v1/explanations/export?format=csv", headers=audit)
    assert table.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(table.get_data(as_text=True))))
    assert [r["id"] for r in rows] == [e["id"] for e in recorded]
    assert [r["kind"] for r in rows] == ["shap", "shap", "shap", "reasons", "counterfactuals"]
    assert all(r["hash"] == store.audit.get(r["id"])["hash"] for r in rows)


def test_exports_longer_than_one_batch_stay_in_order(store: Store) -> None:
    from model_store import audit

    store.audit.append([draft(i) for i in range(audit.STREAM_BATCH + 7)])
    ids = [r["id"] for r in store.audit.stream(audit.RecordFilter(kind="shap"))]
    assert ids == [f"rec-{i}" for i in range(audit.STREAM_BATCH + 7)]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_records_cannot_be_changed_or_deleted(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]], method: str
) -> None:
    record_id = recorded[0]["id"]
    response = getattr(client, method)(
        f"/v1/explanations/{record_id}", json={}, headers=bearer(keys["admin"])
    )
    assert response.status_code == 405 and response.mimetype == PROBLEM
    assert app.extensions["candor"].store.audit.verify()["checked"] == len(recorded)


def test_reading_records_needs_audit_read(
    client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    record_id = recorded[0]["id"]
    for path in (f"/v1/explanations/{record_id}", "/v1/explanations", "/v1/audit/verify"):
        assert client.get(path, headers=bearer(keys["explain"])).status_code == 403
        assert client.get(path, headers=bearer(keys["audit:read"])).status_code == 200
    assert client.get("/v1/explanations/nope", headers=bearer(keys["audit:read"])).status_code == 404


def test_verify_endpoint_reports_the_break(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    audit = bearer(keys["audit:read"])
    assert client.get("/v1/audit/verify", headers=audit).get_json()["ok"] is True
    store = app.extensions["candor"].store
    _execute(
        store,
        "UPDATE explanation_records SET body = replace(body, :ok, :ko) WHERE seq = 4",
        ok='"status":"ok"',
        ko='"status":"ko"',
    )
    verdict = client.get("/v1/audit/verify", headers=audit).get_json()
    assert verdict["ok"] is False and verdict["first_break"]["seq"] == 4 and verdict["checked"] == 3


# -- replay ------------------------------------------------------------------------------------------------


def test_replays_are_identical_and_record_nothing(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    store = app.extensions["candor"].store
    before = store.audit.head()
    for envelope in recorded:
        response = client.post(
            f"/v1/explanations/{envelope['id']}/replay", headers=bearer(keys["audit:read"])
        )
        assert response.status_code == 200, response.get_json()
        outcome = response.get_json()
        assert outcome["identical"] is True, outcome
        assert outcome["max_abs_diff"] == 0.0 and outcome["within_tolerance"] is True
        assert outcome["differences"] == [] and outcome["not_recorded"] == []
        assert outcome["model"]["sha256"] == envelope["model"]["sha256"]
    assert store.audit.head() == before


def test_a_replay_reports_a_difference(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    """The comparison can fail: a record whose stored attribution is altered (chain broken on purpose) replays
    to the altered amount."""
    store = app.extensions["candor"].store
    record = store.audit.get(recorded[0]["id"])
    first = record["explanation"]["results"][0]["attributions"][0]
    changed = {**first, "attribution": first["attribution"] + 0.25}
    record["explanation"]["results"][0]["attributions"][0] = changed
    body = {k: v for k, v in record.items() if k != "hash"}
    _execute(
        store,
        "UPDATE explanation_records SET body = :b WHERE id = :i",
        b=canonical_json(body).decode(),
        i=record["id"],
    )
    outcome = client.post(
        f"/v1/explanations/{record['id']}/replay", headers=bearer(keys["audit:read"])
    ).get_json()
    assert outcome["identical"] is False and outcome["within_tolerance"] is False
    assert outcome["max_abs_diff"] == pytest.approx(0.25)


def _rewrite_explanation(app: Flask, record_id: str, change: Any) -> None:
    """Rewrite a stored record's explanation in place with ``change(explanation)`` (the chain breaks)."""
    store = app.extensions["candor"].store
    record = store.audit.get(record_id)
    change(record["explanation"])
    body = {k: v for k, v in record.items() if k != "hash"}
    _execute(
        store,
        "UPDATE explanation_records SET body = :b WHERE id = :i",
        b=canonical_json(body).decode(),
        i=record_id,
    )


def test_fields_added_since_a_record_was_made_are_listed_not_counted(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    """A record made before the OOD flags existed (their fields taken out of a stored SHAP record) still
    replays identical, and the replay names what it has that the record lacks; a recorded field the replay
    does not produce is a difference."""

    def before_ood(explanation: dict[str, Any]) -> None:
        del explanation["quality"]["ood"]
        del explanation["results"][0]["ood"]

    _rewrite_explanation(app, recorded[0]["id"], before_ood)
    outcome = client.post(
        f"/v1/explanations/{recorded[0]['id']}/replay", headers=bearer(keys["audit:read"])
    ).get_json()
    assert outcome["identical"] is True and outcome["differences"] == [], outcome
    assert outcome["not_recorded"] == ["/quality/ood", "/results/0/ood"]

    def with_extra(explanation: dict[str, Any]) -> None:
        explanation["results"][0]["recorded_only"] = 1

    _rewrite_explanation(app, recorded[1]["id"], with_extra)
    outcome = client.post(
        f"/v1/explanations/{recorded[1]['id']}/replay", headers=bearer(keys["audit:read"])
    ).get_json()
    assert outcome["identical"] is False and outcome["differences"] == ["/results/0/recorded_only"]
    assert outcome["not_recorded"] == []


# -- retention -----------------------------------------------------------------------------------------------


def test_purge_leaves_a_checkpoint_and_a_verifiable_chain(store: Store) -> None:
    store.audit.append([draft(i) for i in range(4)])
    last_purged = _raw_rows(store)[3]
    outcome = store.audit.purge(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert outcome["purged"] == 4
    rows = _raw_rows(store)
    assert [(r.seq, r.kind) for r in rows] == [(5, "checkpoint")]
    assert orjson.loads(rows[0].body)["purged"]["through_hash"] == last_purged.hash
    assert store.audit.verify()["ok"] is True
    store.audit.append([draft(10), draft(11)])
    assert store.audit.verify() == {**store.audit.verify(), "ok": True, "checked": 3}
    store.audit.purge(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert store.audit.verify()["ok"] is True


def test_purge_keeps_newer_records(store: Store) -> None:
    store.audit.append([draft(0), draft(1)])
    time.sleep(0.01)
    store.audit.append([draft(2)])
    third = dt.datetime.fromisoformat(str(store.audit.get("rec-2")["recorded_at"]))
    assert store.audit.purge(third)["purged"] == 2
    assert [(r.seq, r.kind) for r in _raw_rows(store)] == [(3, "shap"), (4, "checkpoint")]
    assert store.audit.verify()["ok"] is True


def test_deleting_a_checkpoint_is_a_break(store: Store) -> None:
    store.audit.append([draft(i) for i in range(2)])
    store.audit.purge(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    store.audit.append([draft(5)])
    _execute(store, "DELETE FROM explanation_records WHERE kind = 'checkpoint'")
    assert store.audit.verify()["ok"] is False


def test_cli_purge_follows_the_retention_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "cli"
    url = f"sqlite:///{(data / 'candor.db').resolve()}"
    monkeypatch.setenv("CANDOR_DATA_DIR", str(data))
    monkeypatch.setenv("CANDOR_DATABASE_URL", url)
    store = Store(data, url)
    store.audit.append([draft(i) for i in range(3)])
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    _execute(store, "UPDATE explanation_records SET recorded_at = :t WHERE seq <= 2", t=old)

    monkeypatch.setenv("CANDOR_RETENTION_DAYS", "0")
    assert cli_main(["audit", "purge"]) == 0
    assert len(_raw_rows(store)) == 3

    monkeypatch.setenv("CANDOR_RETENTION_DAYS", "30")
    assert cli_main(["audit", "purge"]) == 0
    assert "purged 2 records" in capsys.readouterr().out
    assert [r.seq for r in _raw_rows(store)] == [3, 4]
    # The moved times were a break of their own; the purge removed them, and what remains verifies.
    assert cli_main(["audit", "verify"]) == 0
    store.close()


# -- helpers ----------------------------------------------------------------------------------------------


def _raw_rows(store: Store) -> list[Any]:
    with store.engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT * FROM explanation_records ORDER BY seq")))


def _execute(store: Store, statement: str, **params: Any) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(statement), params)

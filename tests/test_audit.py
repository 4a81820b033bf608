"""The audit trail: every explanation is recorded before its response; records are read, listed, exported
and replayed through the API, never changed through it, and purged without breaking the log (the log
itself, its proofs and checkpoints: tests/test_audit_log.py)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import DATA, bearer
from flask import Flask
from flask.testing import FlaskClient

from api.demo import german_credit, loan_model
from api.ops.cli import main as cli_main
from api.service.recording import request_sha256
from candor_verify import merkle
from model_store.audit import RecordDraft, RecordFilter, canonical_json, sha256_hex
from model_store.audit_blobs import verify_trail
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store

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
    assert record["record_schema_version"] == "2.0" and record["leaf_index"] is None  # until integrated
    assert record["hash"] == _leaf_hash_of(store, record["id"])


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
    assert app.extensions["candor"].store.audit.count() == 0


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
    lines_read = [json.loads(line) for line in lines.get_data(as_text=True).splitlines()]
    exported = [line["record"] for line in lines_read if "record" in line]
    assert [r["id"] for r in exported] == [e["id"] for e in recorded[:3]]
    store = app.extensions["candor"].store
    assert exported == [store.audit.get(e["id"]) for e in recorded[:3]]

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
    assert verify_trail(app.extensions["candor"].store.audit_log)["checked"] == len(recorded)


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
    assert verdict["first_break"]["leaf_index"] == 3


# -- replay ------------------------------------------------------------------------------------------------


def test_replays_are_identical_and_record_nothing(
    app: Flask, client: FlaskClient, keys: dict[str, str], recorded: list[dict[str, Any]]
) -> None:
    store = app.extensions["candor"].store
    before = store.audit.count()
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
    assert store.audit.count() == before


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


def test_purge_deletes_the_bodies_of_older_records_only(store: Store) -> None:
    store.audit.append([draft(0), draft(1)])
    time.sleep(0.01)
    store.audit.append([draft(2)])
    third = dt.datetime.fromisoformat(str(store.audit.get("rec-2")["recorded_at"]))
    assert store.audit.purge(third) == {"purged": 2, "chunks": 0}
    assert [(r.seq, r.body is None) for r in _raw_rows(store)] == [(1, True), (2, True), (3, False)]
    assert [r["id"] for r in store.audit.stream(RecordFilter())] == ["rec-2"]
    assert verify_trail(store.audit_log)["ok"] is True
    assert store.audit.purge(third) == {"purged": 0, "chunks": 0}


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
    assert [r.body is None for r in _raw_rows(store)] == [True, True, False]
    # The moved times were a break of their own; the purge removed the bodies they contradicted.
    assert cli_main(["audit", "verify"]) == 0
    store.close()


# -- helpers ----------------------------------------------------------------------------------------------


def _leaf_hash_of(store: Store, record_id: str) -> str:
    """The leaf hash of a record's stored bytes, recomputed."""
    with store.engine.connect() as connection:
        body = connection.execute(
            sa.text("SELECT body FROM explanation_records WHERE id = :i"), {"i": record_id}
        ).scalar_one()
    return merkle.leaf_hash(body.encode()).hex()


def _raw_rows(store: Store) -> list[Any]:
    with store.engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT * FROM explanation_records ORDER BY seq")))


def _execute(store: Store, statement: str, **params: Any) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(statement), params)

"""``Idempotency-Key`` on the explain routes: a retried request answers with the explanation recorded first,
read back from its audit record, so a decision's explanation is recorded once however often its client
retries; the same key with another request is a 422 naming the header; keys belong to the API key that sent
them, a refused request leaves its key unused, and a purge forgets the keys of the records it deletes."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import orjson
import pytest
from conftest import bearer
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from test_audit import declined_row, loan_rows

from api.demo import loan_model
from api.http.jsonio import dumps_bytes
from api.service.explain_request import ExplainRequest
from api.service.recording import recorded_envelope
from model_store.audit_blobs import verify_trail
from model_store.errors import IdempotencyKeyTaken
from model_store.explain_keys import ExplainKeys, Idempotency
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.tables import ExplainKeyRow, RecordRow

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
LOAN = "/v1/models/loan/versions/1"
ROUTES = [
    (f"{LOAN}/explain/shap", {"instances": loan_rows()}),
    (f"{LOAN}/explain/counterfactuals", {"instances": [declined_row()], "total_cfs": 2, "seed": 7}),
    (f"{LOAN}/explain/reasons", {"instances": [declined_row()]}),
    ("/v1/models/loan:explain", {"instances": loan_rows(1)}),
]


def post(client: FlaskClient, token: str, route: str, body: dict[str, Any], key: str | None) -> Any:
    headers = bearer(token)
    if key is not None:
        headers[HEADER] = key
    return client.post(route, json=body, headers=headers)


def count(app: Flask, table: Any) -> int:
    with app.extensions["candor"].store.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


@pytest.mark.parametrize(("route", "body"), ROUTES, ids=["shap", "counterfactuals", "reasons", "kserve"])
def test_a_retry_answers_with_the_recorded_explanation(
    app: Flask, client: FlaskClient, keys: dict[str, str], route: str, body: dict[str, Any]
) -> None:
    first = post(client, keys["explain"], route, body, "retry-1")
    assert first.status_code == 200, first.get_json()
    assert REPLAYED not in first.headers
    again = post(client, keys["explain"], route, body, "retry-1")
    assert again.status_code == 200, again.get_json()
    assert again.headers[REPLAYED] == "true"
    assert again.get_json() == first.get_json()  # the same envelope, id included
    assert count(app, RecordRow) == 1
    record = client.get(f"/v1/explanations/{first.get_json()['id']}", headers=bearer(keys["audit:read"]))
    assert record.get_json()["explanation"] == first.get_json()
    without = [post(client, keys["explain"], route, body, None) for _ in range(2)]
    assert without[0].get_json()["id"] != without[1].get_json()["id"]  # no key: each one is recorded
    quoted = post(client, keys["explain"], route, body, '"retry-1"')  # compared as sent: another key
    assert quoted.status_code == 200 and REPLAYED not in quoted.headers
    assert count(app, RecordRow) == 4
    assert count(app, ExplainKeyRow) == 2


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (f"{LOAN}/explain/shap", {"instances": loan_rows(3)}),
        (f"{LOAN}/explain/shap", {"instances": loan_rows(), "output": "probability"}),
        (f"{LOAN}/explain/shap?narrative=true", {"instances": loan_rows()}),
        ("/v1/models/loan/versions/latest/explain/shap", {"instances": loan_rows()}),
        (f"{LOAN}/explain/reasons", {"instances": loan_rows()}),
    ],
    ids=["other-rows", "other-options", "narrative", "version-as-asked", "other-method"],
)
def test_the_same_key_for_another_request_is_refused(
    app: Flask, client: FlaskClient, keys: dict[str, str], route: str, body: dict[str, Any]
) -> None:
    assert (
        post(client, keys["explain"], f"{LOAN}/explain/shap", {"instances": loan_rows()}, "k").status_code
        == 200
    )
    refused = post(client, keys["explain"], route, body, "k")
    assert refused.status_code == 422, refused.get_json()
    kserve = route.endswith(":explain")  # KServe routes answer application/json, with `error`
    assert refused.mimetype == ("application/json" if kserve else "application/problem+json")
    assert HEADER in refused.get_json()["errors"]
    assert count(app, RecordRow) == 1


@pytest.mark.parametrize(
    "route",
    ["/v1/models/loan/versions/production/explain/shap", "/v1/models/loan:explain"],
    ids=["named", "kserve"],
)
def test_a_retry_after_a_promotion_is_the_same_request(
    app: Flask, client: FlaskClient, keys: dict[str, str], route: str
) -> None:
    """The version as asked is what a retry repeats: answered as it was first, on the version it had then."""
    body = {"instances": loan_rows()}
    first = post(client, keys["explain"], route, body, "before-promotion")
    assert first.get_json()["model"]["version"] == 1
    store = app.extensions["candor"].store
    manifest, pipeline, reference = loan_model()
    second = store.registry.register_tabular(
        parse_manifest(manifest), dump_skops(pipeline), to_parquet(reference)
    )
    store.registry.promote("loan", second.version)
    again = post(client, keys["explain"], route, body, "before-promotion")
    assert again.status_code == 200 and again.headers[REPLAYED] == "true"
    assert again.get_json() == first.get_json()
    fresh = post(client, keys["explain"], route, body, "after-promotion")
    assert fresh.get_json()["model"]["version"] == second.version


def test_a_key_whose_record_was_purged_is_explained_anew(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    """A purge between a retry's lookup and its read leaves no key to answer with: the retry explains anew."""
    context = app.extensions["candor"]
    key_id = context.store.keys.authenticate(keys["explain"]).key_id
    request = ExplainRequest("shap", "loan", "1", loan_rows(), {}, key_id=key_id, idempotency_key="purged")
    first, replayed = context.service.answer(request)
    assert not replayed
    found = ExplainKeys(context.store.sessions).find(key_id, "purged")
    assert found is not None and found.record_id == first["id"]
    context.store.audit.purge(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert recorded_envelope(context.store, found.record_id) is None
    again, replayed = context.service.answer(request)
    assert not replayed and again["id"] != first["id"]
    replayed_envelope, replayed = context.service.answer(request)
    assert replayed and replayed_envelope == orjson.loads(dumps_bytes(again))  # the JSON value sent


def test_keys_belong_to_the_api_key_that_sent_them(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    other = app.extensions["candor"].store.keys.create("other-explainer", ["explain"])[0]
    body = {"instances": loan_rows()}
    mine = post(client, keys["explain"], f"{LOAN}/explain/shap", body, "shared")
    theirs = post(client, other, f"{LOAN}/explain/shap", body, "shared")
    assert theirs.status_code == 200 and REPLAYED not in theirs.headers
    assert theirs.get_json()["id"] != mine.get_json()["id"]
    assert count(app, RecordRow) == 2


def test_a_refused_request_leaves_its_key_unused(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    bad = {"instances": [{**loan_rows(1)[0], "age": "old"}]}
    assert post(client, keys["explain"], f"{LOAN}/explain/shap", bad, "k").status_code == 422
    good = post(client, keys["explain"], f"{LOAN}/explain/shap", {"instances": loan_rows()}, "k")
    assert good.status_code == 200 and REPLAYED not in good.headers
    assert count(app, RecordRow) == 1 and count(app, ExplainKeyRow) == 1


@pytest.mark.parametrize("key", ["has space", "x" * 256, "caf\u00e9"], ids=["space", "too-long", "non-ascii"])
def test_a_malformed_key_is_refused_naming_the_header(
    app: Flask, client: FlaskClient, keys: dict[str, str], key: str
) -> None:
    headers = {**bearer(keys["explain"]), HEADER: key.encode("utf-8").decode("latin-1")}
    response = client.post(f"{LOAN}/explain/shap", json={"instances": loan_rows()}, headers=headers)
    assert response.status_code == 422, response.get_json()
    assert HEADER in response.get_json()["errors"]
    assert count(app, RecordRow) == 0


def test_racing_retries_leave_one_record(app: Flask, keys: dict[str, str]) -> None:
    """Retries sent at once: every one is answered with the one explanation that was recorded."""
    body = {"instances": loan_rows()}
    barrier = threading.Barrier(4)
    answers: list[Any] = []

    def retry() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(post(client, keys["explain"], f"{LOAN}/explain/shap", body, "race"))

    threads = [threading.Thread(target=retry) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200] * 4
    assert len({a.get_json()["id"] for a in answers}) == 1
    assert sorted(a.headers.get(REPLAYED, "") for a in answers) == ["", "true", "true", "true"]
    assert count(app, RecordRow) == 1


def test_a_claimed_key_rolls_the_second_record_back(app: Flask, keys: dict[str, str]) -> None:
    """Below the lookup: the key is claimed in the record's transaction, so a request that lost the race
    commits nothing (its record included)."""
    context = app.extensions["candor"]
    key_id = context.store.keys.authenticate(keys["explain"]).key_id
    rows = loan_rows()
    claim = Idempotency("claimed", "0" * 64)
    request = ExplainRequest("shap", "loan", "1", rows, {}, key_id=key_id)
    context.service.explain(request, idempotency=claim)
    with pytest.raises(IdempotencyKeyTaken):
        context.service.explain(request, idempotency=claim)
    assert count(app, RecordRow) == 1 and count(app, ExplainKeyRow) == 1
    assert verify_trail(context.store.audit_log)["ok"]


def test_a_purge_forgets_the_keys_of_the_records_it_deletes(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    body = {"instances": loan_rows()}
    first = post(client, keys["explain"], f"{LOAN}/explain/shap", body, "kept-until-purged")
    store = app.extensions["candor"].store
    store.audit.purge(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert count(app, ExplainKeyRow) == 0
    again = post(client, keys["explain"], f"{LOAN}/explain/shap", body, "kept-until-purged")
    assert again.status_code == 200 and REPLAYED not in again.headers
    assert again.get_json()["id"] != first.get_json()["id"]
    assert verify_trail(store.audit_log)["ok"]

"""The typed request and the one idempotency flow (issue 19): rows are validated once per request, whatever
the method calls in turn; the server's limits reach the adapter apart from the client's options and are never
recorded; the same fault of an ``Idempotency-Key`` gets the same answer on an explain route and on a job."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_audit import declined_row, loan_rows
from test_jobs_idempotency import csv_of

from api.service.explain_request import ExplainRequest
from explainers.registry import SHAP, adapter
from explainers.rows import TabularRows
from model_store.errors import InvalidInput

HEADER = "Idempotency-Key"
LOAN = "/v1/models/loan/versions/1"


def bearer(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers[HEADER] = key
    return headers


def test_a_reasons_request_validates_its_rows_once(app: Flask, keys: dict[str, str]) -> None:
    """Reasons runs SHAP and counterfactuals on the same rows, and the OOD flags read them too: one
    validation (it was four before the typed request)."""
    service = app.extensions["candor"].service
    model = service.store.registry.load(service.store.registry.resolve("loan", "1"))
    calls: list[int] = []
    originals = {name: getattr(model, name) for name in ("validate", "validate_columns")}

    def counting(name: str) -> Any:
        def counted(instances: Any) -> Any:
            calls.append(len(instances))
            return originals[name](instances)

        return counted

    for name in originals:  # either way of validating (the rows' keeps the values per feature)
        setattr(model, name, counting(name))
    try:
        rows = [declined_row(), *loan_rows(2)]
        options = {"with_counterfactual": True, "seed": 0, "budget_ms": 2000}
        _, explanation = service.compute(ExplainRequest("reasons", "loan", "1", rows, options))
    finally:
        for name in originals:
            delattr(model, name)
    assert calls == [3]
    assert explanation.results[0]["status"] == "declined"
    assert all("ood" in r for r in explanation.results)


def test_server_limits_reach_the_adapter_apart_and_are_not_recorded(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    """A permutation SHAP request over the server's work limit is refused by the adapter, which got the
    limit separately; the client cannot send the limit as an option; a record keeps the client's options."""
    context = app.extensions["candor"]
    model = context.store.registry.load(context.store.registry.resolve("loan", "1"))
    rows = TabularRows(model, loan_rows(2))
    options = {"algorithm": "permutation", "max_evals": 4096, "background_rows": 200}
    info = context.store.registry.resolve("loan", "1")
    with pytest.raises(Exception, match="model evaluations"):
        adapter(SHAP).explain(info, model, rows, options, {"max_work": 1000})
    smuggled = client.post(
        f"{LOAN}/explain/shap",
        json={"instances": loan_rows(1), "max_work": 10**12},
        headers=bearer(keys["explain"]),
    )
    assert smuggled.status_code == 422 and "max_work" in smuggled.get_json()["errors"]
    answered = client.post(
        f"{LOAN}/explain/shap", json={"instances": loan_rows(1)}, headers=bearer(keys["explain"])
    )
    assert answered.status_code == 200
    record = context.store.audit.get(answered.get_json()["id"])
    assert record["request"]["options"] == {}


def test_a_key_reused_for_another_request_is_the_same_422_on_explain_and_on_jobs(
    client: FlaskClient, keys: dict[str, str]
) -> None:
    token = keys["explain"]
    first = client.post(f"{LOAN}/explain/shap", json={"instances": loan_rows(1)}, headers=bearer(token, "k1"))
    other = client.post(f"{LOAN}/explain/shap", json={"instances": loan_rows(2)}, headers=bearer(token, "k1"))
    form = {"model": "loan", "version": "1", "kind": "shap", "options": "{}"}

    def job(rows: int) -> Any:
        data = {**form, "file": (io.BytesIO(csv_of(rows)), "rows.csv")}
        return client.post(
            "/v1/jobs", data=data, headers=bearer(token, "j1"), content_type="multipart/form-data"
        )

    assert first.status_code == 200 and job(2).status_code == 202
    refused = [other, job(3)]
    for answer in refused:
        assert answer.status_code == 422, answer.data
        assert answer.mimetype == "application/problem+json"
        assert list(answer.get_json()["errors"]) == [HEADER]
    messages = [answer.get_json()["errors"][HEADER][0] for answer in refused]
    assert messages[0].replace("explanation", "job") == messages[1]


def test_a_request_that_cannot_be_fingerprinted_is_a_422_naming_its_field_on_both(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    """An integer past 64 bits cannot be written as canonical JSON (nor recorded): with a key, a 422 naming
    the field that holds it, for an explanation and for a job alike (never a 500, never ignored). (Over HTTP
    the JSON parser reads such a number as a float; the service is called directly here.)"""
    context = app.extensions["candor"]
    key_id = context.store.keys.authenticate(keys["explain"]).key_id
    row = {**loan_rows(1)[0], "credit_amount": 2**70}
    request = ExplainRequest("shap", "loan", "1", [row], {}, key_id=key_id, idempotency_key="big")
    with pytest.raises(InvalidInput) as explained:
        context.service.answer(request)
    assert list(explained.value.errors) == ["instances"]
    data = {
        "model": "loan",
        "version": "1",
        "kind": "shap",
        "options": json.dumps({"top_k": 2**70}),
        "file": (io.BytesIO(csv_of(2)), "rows.csv"),
    }
    headers = bearer(keys["explain"], "big")
    queued = client.post("/v1/jobs", data=data, headers=headers, content_type="multipart/form-data")
    assert queued.status_code == 422, queued.data
    assert all(field.startswith("options") for field in queued.get_json()["errors"]), queued.get_json()


def test_an_adapter_refuses_bad_options_before_bad_rows(client: FlaskClient, keys: dict[str, str]) -> None:
    """Rows are validated when the adapter first reads them, after it has checked its options: a request
    wrong in both ways is answered, as it always was, with the options' 422."""
    row = {**loan_rows(1)[0], "purpose": "no such purpose"}
    body = {"instances": [row], "layout": "columnar", "top_k": 3}
    answer = client.post(f"{LOAN}/explain/shap", json=body, headers=bearer(keys["explain"]))
    assert answer.status_code == 422
    assert list(answer.get_json()["errors"]) == ["top_k"], answer.get_json()
    rows_only = client.post(
        f"{LOAN}/explain/shap", json={"instances": [row]}, headers=bearer(keys["explain"])
    )
    assert rows_only.status_code == 422
    assert all(field.startswith("instances.0") for field in rows_only.get_json()["errors"])

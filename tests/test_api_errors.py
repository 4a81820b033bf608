"""Every client mistake is a 4xx RFC 9457 problem (application/problem+json) that names the field at fault,
never a 500; and no failed request changes what is registered."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.demo import LOAN_TARGET, german_credit
from api.http.app import create_app

PROBLEM = "application/problem+json"
PREDICT = "/v1/models/loan/versions/1/predict"
SHAP = "/v1/models/loan/versions/1/explain/shap"
KSERVE = "/v1/models/loan:predict"


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


_LOAN = german_credit().drop(columns=[LOAN_TARGET])
LOAN_ROWS = [{k: _native(v) for k, v in row.items()} for row in _LOAN.head(5).to_dict("records")]


def loan_row(**changes: Any) -> dict[str, Any]:
    row = dict(LOAN_ROWS[0])
    row.update(changes)
    return row


def without(*names: str) -> dict[str, Any]:
    return {k: v for k, v in LOAN_ROWS[0].items() if k not in names}


def problem_type(path: str) -> str:
    """KServe routes send their problem documents as application/json (what KServe clients read)."""
    return "application/json" if path.endswith((":predict", ":explain")) else PROBLEM


def assert_problem(response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == problem_type(response.request.path)
    body = response.get_json()
    if response.mimetype != PROBLEM:
        assert body["error"], body
    assert {"type", "title", "status", "instance"} <= body.keys(), body
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert isinstance(body["title"], str) and body["title"]
    assert body["instance"] == response.request.path
    text = json.dumps(body)
    assert "Traceback" not in text and "/site-packages/" not in text
    if field is not None:
        assert field in body.get("errors", {}), body
        assert all(isinstance(m, str) and m for m in body["errors"][field])
    return body


def assert_loan_intact(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get("/v1/models/loan", headers=auth)
    assert response.status_code == 200
    body = response.get_json()
    assert [v["version"] for v in body["versions"]] == [1]
    assert body["production_version"] == 1


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[tuple[FlaskClient, dict]]:
    """One app for the many read-only error cases (each checks that nothing changed); keeps the suite fast."""
    data = tmp_path_factory.mktemp("errors") / "data"
    shutil.copytree(demo_dir, data)
    application = create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}"})
    yield application.test_client(), explain_key(application)
    application.extensions["candor"].store.close()


def explain_key(application: Flask) -> dict[str, str]:
    token = application.extensions["candor"].store.keys.create("t", ["explain"])[0]
    return {"Authorization": f"Bearer {token}"}


# -- valid requests (the control cases) --------------------------------------------------------------------
@pytest.mark.parametrize("version", ["1", "latest", "production"])
def test_valid_predict_on_number_and_aliases(client: FlaskClient, auth: dict[str, str], version: str) -> None:
    response = client.post(
        f"/v1/models/loan/versions/{version}/predict", json={"instances": LOAN_ROWS[:3]}, headers=auth
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["model"]["name"] == "loan"
    assert body["model"]["version"] == 1
    assert len(body["predictions"]) == 3
    for prediction in body["predictions"]:
        assert prediction["label"] in ("bad", "good")
        assert sum(prediction["probabilities"].values()) == pytest.approx(1.0)


def test_valid_shap_request(client: FlaskClient, auth: dict[str, str]) -> None:
    body = {"instances": [LOAN_ROWS[0]], "top_k": 5, "target": "bad", "output": "probability"}
    response = client.post(SHAP, json=body, headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()["results"][0]
    assert result["target"] == "bad"
    assert len(result["attributions"]) == 5


def test_charset_parameter_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.post(
        PREDICT,
        data=json.dumps({"instances": [LOAN_ROWS[0]]}),
        content_type="application/json; charset=utf-8",
        headers=auth,
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# -- schema and feature errors -----------------------------------------------------------------------------
D = "duration_in_month"
CASES = [
    # request shape
    pytest.param(PREDICT, {"instances": [LOAN_ROWS[0]], "explain": True}, "explain", id="unknown-top-level"),
    pytest.param(PREDICT, {}, "instances", id="no-instances"),
    pytest.param(PREDICT, {"instances": []}, "instances", id="empty-instances"),
    pytest.param(PREDICT, {"instances": {"a": 1}}, "instances", id="instances-not-a-list"),
    pytest.param(PREDICT, {"instances": [[1, 2, 3]]}, "instances.0", id="instance-not-an-object"),
    pytest.param(PREDICT, [LOAN_ROWS[0]], None, id="body-is-a-list"),
    # features
    pytest.param(
        PREDICT, {"instances": [loan_row(colour="red")]}, "instances.0.colour", id="unknown-feature"
    ),
    pytest.param(PREDICT, {"instances": [without(D)]}, f"instances.0.{D}", id="missing-feature"),
    pytest.param(
        PREDICT, {"instances": [loan_row(**{D: "12"})]}, f"instances.0.{D}", id="string-for-numeric"
    ),
    pytest.param(PREDICT, {"instances": [loan_row(**{D: True})]}, f"instances.0.{D}", id="bool-for-numeric"),
    pytest.param(PREDICT, {"instances": [loan_row(**{D: None})]}, f"instances.0.{D}", id="null-for-numeric"),
    pytest.param(PREDICT, {"instances": [loan_row(**{D: [12]})]}, f"instances.0.{D}", id="list-for-numeric"),
    pytest.param(
        PREDICT, {"instances": [loan_row(purpose=3.5)]}, "instances.0.purpose", id="float-categorical"
    ),
    pytest.param(
        PREDICT, {"instances": [loan_row(purpose=3)]}, "instances.0.purpose", id="int-for-categorical"
    ),
    pytest.param(
        PREDICT, {"instances": [loan_row(purpose=False)]}, "instances.0.purpose", id="bool-categorical"
    ),
    pytest.param(
        PREDICT, {"instances": [loan_row(purpose="yacht")]}, "instances.0.purpose", id="unknown-category"
    ),
    pytest.param(
        PREDICT,
        {"instances": [LOAN_ROWS[0], loan_row(job="astronaut")]},
        "instances.1.job",
        id="second-instance",
    ),
    # SHAP options
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "top_k": 0}, "top_k", id="top-k-zero"),
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "top_k": "three"}, "top_k", id="top-k-string"),
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "output": "log-odds"}, "output", id="output-invalid"),
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "output": "margin"}, "output", id="output-margin"),
    pytest.param(
        SHAP, {"instances": [LOAN_ROWS[0]], "algorithm": "magic"}, "algorithm", id="algorithm-invalid"
    ),
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "seed": -1}, "seed", id="seed-negative"),
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "max_evals": 100_000}, "max_evals", id="max-evals-cap"),
    pytest.param(
        SHAP,
        {"instances": [LOAN_ROWS[0]], "background_rows": 100_000},
        "background_rows",
        id="background-cap",
    ),
    pytest.param(SHAP, {"instances": [LOAN_ROWS[0]], "target": "maybe"}, "target", id="unknown-target"),
    pytest.param(
        SHAP, {"instances": [loan_row(age_in_years="old")]}, "instances.0.age_in_years", id="shap-feature"
    ),
    pytest.param(SHAP, {"instances": []}, "instances", id="shap-empty"),
    # KServe V1
    pytest.param(
        KSERVE, {"instances": [loan_row(purpose="yacht")]}, "instances.0.purpose", id="kserve-category"
    ),
    pytest.param(KSERVE, {"instances": [[1, 2]]}, "instances.0", id="kserve-short-row"),
    pytest.param(KSERVE, {"instances": []}, "instances", id="kserve-empty"),
]


@pytest.mark.parametrize(("path", "body", "field"), CASES)
def test_bad_request_is_a_422_problem_naming_the_field(
    shared: tuple[FlaskClient, dict], path: str, body: Any, field: str | None
) -> None:
    client, auth = shared
    problem = assert_problem(client.post(path, json=body, headers=auth), 422, field)
    if field is None:
        assert problem.get("detail")
    assert_loan_intact(client, auth)


def test_many_errors_are_reported_together(shared: tuple[FlaskClient, dict]) -> None:
    client, auth = shared
    body = {"instances": [without(D), loan_row(purpose="yacht", colour="red")]}
    problem = assert_problem(client.post(PREDICT, json=body, headers=auth), 422)
    assert {f"instances.0.{D}", "instances.1.purpose", "instances.1.colour"} <= problem["errors"].keys()


# -- malformed JSON ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"instances":[{"x":NaN}]}', id="NaN"),
        pytest.param(b'{"instances":[{"x":Infinity}]}', id="Infinity"),
        pytest.param(b'{"instances":[{"x":-Infinity}]}', id="minus-Infinity"),
        pytest.param(b'{"instances":[{"duration_in_month":1e400}]}', id="1e400"),
        pytest.param(b'{"instances":[{"duration_in_month":-1e400}]}', id="minus-1e400"),
        pytest.param(b'{"instances": [', id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"{'instances': []}", id="single-quotes"),
    ],
)
@pytest.mark.parametrize("path", [PREDICT, SHAP, KSERVE])
def test_malformed_json_is_a_400_problem(shared: tuple[FlaskClient, dict], raw: bytes, path: str) -> None:
    client, auth = shared
    response = client.post(path, data=raw, content_type="application/json", headers=auth)
    assert_problem(response, 400)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    "raw_number",
    [
        "1e400",
        "-1e400",
        "123456789012345678901234567890",
        "3e38",
        "3.5e38",  # finite, but beyond float32 (what the tree models cast inputs to)
        "1e308",
        "-1e308",
    ],
)
def test_huge_numbers_in_a_real_row_are_never_a_500(
    shared: tuple[FlaskClient, dict], raw_number: str
) -> None:
    client, auth = shared
    row = json.dumps(LOAN_ROWS[0]).replace('"credit_amount": 1169', f'"credit_amount": {raw_number}')
    assert raw_number in row
    raw = f'{{"instances": [{row}]}}'.encode()
    statuses = {}
    for path in (PREDICT, SHAP, KSERVE, "/v1/models/loan:explain"):
        response = client.post(path, data=raw, content_type="application/json", headers=auth)
        statuses[path] = response.status_code
        if response.status_code != 200:
            assert response.mimetype == problem_type(path)
    assert all(status < 500 for status in statuses.values()), statuses
    if "e400" in raw_number:  # not representable as a double: not JSON the service accepts
        assert set(statuses.values()) == {400}, statuses
    assert_loan_intact(client, auth)


# -- not found, methods, content types ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/ghost/versions/1/predict",
        "/v1/models/ghost/versions/latest/explain/shap",
        "/v1/models/loan/versions/2/predict",
        "/v1/models/loan/versions/99/explain/shap",
        "/v1/models/loan/versions/staging/predict",
        "/v1/models/ghost:predict",
        "/v1/models/ghost:explain",
    ],
)
def test_unknown_model_or_version_is_a_404_problem(shared: tuple[FlaskClient, dict], path: str) -> None:
    client, auth = shared
    assert_problem(client.post(path, json={"instances": [LOAN_ROWS[0]]}, headers=auth), 404)
    assert_loan_intact(client, auth)


def test_unknown_route_is_a_404_problem(shared: tuple[FlaskClient, dict]) -> None:
    client, auth = shared
    assert_problem(client.get("/v1/nothing-here", headers=auth), 404)
    assert_problem(client.get("/v1/models/loan/versions/1/explain/lime", headers=auth), 404)


def test_wrong_method_is_a_405_problem_with_allow(client: FlaskClient, auth: dict[str, str]) -> None:
    response = client.get(PREDICT, headers=auth)
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_problem(client.delete("/v1/models/loan", headers=auth), 405)
    assert_loan_intact(client, auth)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", None]
)
@pytest.mark.parametrize("path", [PREDICT, SHAP, KSERVE])
def test_wrong_content_type_is_a_415_problem(
    shared: tuple[FlaskClient, dict], content_type: str | None, path: str
) -> None:
    client, auth = shared
    raw = json.dumps({"instances": [LOAN_ROWS[0]]})
    kwargs: dict[str, Any] = {"data": raw, "headers": auth}
    if content_type is not None:
        kwargs["content_type"] = content_type
    body = assert_problem(client.post(path, **kwargs), 415)
    assert "application/json" in body["detail"]


def test_multipart_to_a_json_route_is_a_415_problem(shared: tuple[FlaskClient, dict]) -> None:
    client, auth = shared
    response = client.post(
        PREDICT,
        data={"instances": (io.BytesIO(b"{}"), "x.json")},
        content_type="multipart/form-data",
        headers=auth,
    )
    assert_problem(response, 415)


# -- server limits -----------------------------------------------------------------------------------------
def test_too_many_instances_is_a_422_problem(make_app: Callable[..., Flask]) -> None:
    application = make_app(max_instances=2)
    client, auth = application.test_client(), explain_key(application)
    assert client.post(PREDICT, json={"instances": LOAN_ROWS[:2]}, headers=auth).status_code == 200
    for path in (PREDICT, SHAP, KSERVE):
        body = assert_problem(
            client.post(path, json={"instances": LOAN_ROWS[:3]}, headers=auth), 422, "instances"
        )
        assert "2" in body["errors"]["instances"][0]
    assert_loan_intact(client, auth)


def test_body_over_max_body_bytes_is_a_413_problem(make_app: Callable[..., Flask]) -> None:
    application = make_app(max_body_bytes=4096)
    client, auth = application.test_client(), explain_key(application)
    small = json.dumps({"instances": LOAN_ROWS[:2]}).encode()
    assert len(small) < 4096
    assert client.post(PREDICT, data=small, content_type="application/json", headers=auth).status_code == 200

    big = json.dumps({"instances": LOAN_ROWS * 20}).encode()
    assert len(big) > 4096
    for path in (PREDICT, SHAP, KSERVE):
        assert_problem(client.post(path, data=big, content_type="application/json", headers=auth), 413)
    assert_loan_intact(client, auth)


class _CountingBody(io.BytesIO):
    """A request body that records how much of it the server read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self.consumed += count
        return count

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.consumed += len(line)
        return line


def test_chunked_body_over_max_body_bytes_is_a_413_problem(make_app: Callable[..., Flask]) -> None:
    """No Content-Length (Transfer-Encoding: chunked): the limit must hold while the body is read.

    ``wsgi.input_terminated`` is what gunicorn sets for chunked requests; without it werkzeug reads nothing.
    """
    application = make_app(max_body_bytes=4096)
    client, auth = application.test_client(), explain_key(application)
    headers = {**auth, "Transfer-Encoding": "chunked"}
    environ = {"wsgi.input_terminated": True}

    small = json.dumps({"instances": LOAN_ROWS[:2]}).encode()
    response = client.post(
        PREDICT,
        input_stream=_CountingBody(small),
        content_type="application/json",
        headers=headers,
        environ_overrides=environ,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.request.content_length is None

    big = json.dumps({"instances": LOAN_ROWS * 2000}).encode()
    for path in (PREDICT, SHAP, KSERVE):
        body = _CountingBody(big)
        response = client.post(
            path,
            input_stream=body,
            content_type="application/json",
            headers=headers,
            environ_overrides=environ,
        )
        assert response.request.content_length is None
        assert_problem(response, 413)
        assert body.consumed < len(big) // 10, "the server stopped reading at the limit"
    assert_loan_intact(client, auth)

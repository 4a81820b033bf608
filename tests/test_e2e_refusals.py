"""Over real HTTP (the real gunicorn with the project's config): what gunicorn refuses before the app, and a
streamed export that fails, are answered in JSON a client can read, never gunicorn's HTML page.

No demo models are needed: the data dir holds a key and a few records, one of them made unreadable.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn_process import Gunicorn, free_port, running_gunicorn, server_env
from sqlalchemy import update

from model_store.audit import RecordDraft
from model_store.store import Store
from model_store.tables import RecordRow

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"


def draft(index: int, model: str) -> RecordDraft:
    content = {"explanation": {"value": index}, "request": {"options": {}, "instances": [index]}}
    return RecordDraft(f"rec-{index}", "shap", model, 1, "k1", "ok", content)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gunicorn, str]]:
    data = tmp_path_factory.mktemp("refusals").resolve()
    store = Store(data, f"sqlite:///{data}/candor.db")
    token, _ = store.keys.create("e2e", ["admin"])
    # model "a": a readable record, then an unreadable one; model "b": an unreadable one first
    store.audit.append([draft(1, "a"), draft(2, "a"), draft(3, "b")])
    with store.sessions.begin() as session:
        session.execute(update(RecordRow).where(RecordRow.seq.in_([2, 3])).values(body="{not json"))
    store.close()
    env = server_env(data, free_port(), CANDOR_WORKERS="1", CANDOR_LOG_LEVEL="warning")
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:
        yield gunicorn, token


def raw(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as bytes; the answer's status, headers and body (read until the server closes)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def log_lines(server: Gunicorn) -> list[dict[str, Any]]:
    text = server.log.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_request_line_over_the_limit_is_a_414_problem(server: tuple[Gunicorn, str]) -> None:
    gunicorn, _ = server
    path = "/v1/models/" + "x" * 8200
    status, headers, body = raw(gunicorn.base, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 414 and headers["content-type"] == PROBLEM, body
    problem = json.loads(body)
    assert problem["status"] == 414 and problem["title"] == "URI Too Long"
    assert "CANDOR_MAX_REQUEST_LINE" in problem["detail"]
    assert headers["x-request-id"] == problem["request_id"]
    assert any(
        line["logger"] == "candor.http" and line["request_id"] == problem["request_id"]
        for line in log_lines(gunicorn)
    )


def test_a_request_line_under_8190_bytes_reaches_the_app(server: tuple[Gunicorn, str]) -> None:
    """gunicorn's default (4094 bytes) is raised to its maximum: the app answers (here, no such model)."""
    gunicorn, token = server
    response = requests.get(
        gunicorn.base + "/v1/models/" + "x" * 6000, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 404 and response.headers["Content-Type"] == PROBLEM
    assert response.json()["title"] == "Not found"


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n", 431),
        (b"GET /v1/health HTTP/9.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /v1/he alth HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ],
)
def test_other_refusals_before_the_app_are_problems(
    server: tuple[Gunicorn, str], request_bytes: bytes, status: int
) -> None:
    gunicorn, _ = server
    answered, headers, body = raw(gunicorn.base, request_bytes)
    assert answered == status and headers["content-type"] == PROBLEM, body
    assert json.loads(body)["status"] == status


def test_an_export_failing_midway_ends_with_an_error_line(server: tuple[Gunicorn, str]) -> None:
    gunicorn, token = server
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "e2e-stream"}
    response = requests.get(gunicorn.base + "/v1/explanations/export?model=a", headers=headers, timeout=10)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["record"]["id"] == "rec-1"
    assert lines[-1]["error"]["status"] == 500 and lines[-1]["error"]["request_id"] == "e2e-stream"
    [entry] = [line for line in log_lines(gunicorn) if line.get("request_id") == "e2e-stream"]
    assert entry["logger"] == "candor.stream" and "JSONDecodeError" in entry["exception"]
    assert "Traceback" not in _plain_lines(gunicorn.log), "every traceback is inside a JSON log line"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_failing_at_once_is_a_500_problem(server: tuple[Gunicorn, str], fmt: str) -> None:
    gunicorn, token = server
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{gunicorn.base}/v1/explanations/export?model=b&format={fmt}"
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 500 and response.headers["Content-Type"] == PROBLEM
    assert response.json()["status"] == 500


def _plain_lines(log: Path) -> str:
    return "\n".join(
        line for line in log.read_text(errors="replace").splitlines() if not line.startswith("{")
    )

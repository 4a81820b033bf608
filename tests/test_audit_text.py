"""Text explanations in the audit trail: truncation is stated as a warning, and attention and integrated
gradients replay within their stated tolerance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient
from text_oracles import bearer, tar_of_directory, text_app, tiny_bert_dir, tokens_for, upload

LONG = " ".join(["chest pain"] * 40)  # more tokens than the tiny model reads


@pytest.fixture(scope="module")
def text_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, dict[str, str]]]:
    app = text_app(tmp_path_factory.mktemp("audit-text") / "data", audit_attention="full")  # reads blobs
    tokens = tokens_for(app)
    response = upload(app, tokens["models:write"], tar_of_directory(tiny_bert_dir(tmp_path_factory)))
    assert response.status_code == 201, response.get_json()
    yield app, tokens
    app.extensions["candor"].store.close()


@pytest.mark.parametrize(
    "route,options",
    [
        ("explain/attention", {"aggregate": "mean"}),
        ("explain/attributions", {"method": "integrated_gradients", "n_steps": 16}),
    ],
)
def test_truncation_is_a_recorded_warning_and_text_explanations_replay(
    text_served: tuple[Flask, dict[str, str]], route: str, options: dict[str, Any]
) -> None:
    app, tokens = text_served
    client = app.test_client()
    body = {"instances": [{"text": "short note"}, {"text": LONG}], "truncate": True, **options}
    response = client.post(
        f"/v1/models/triage/versions/1/{route}", json=body, headers=bearer(tokens["explain"])
    )
    assert response.status_code == 200, response.get_json()
    envelope = response.get_json()
    record = app.extensions["candor"].store.audit.get(envelope["id"])
    original = envelope["results"][1]["original_tokens"]
    assert envelope["results"][1]["truncated"] is True and envelope["results"][0]["truncated"] is False
    assert record["warnings"] == [f"instance 1: text truncated from {original} tokens"]
    assert record["request"]["instances"] == body["instances"]
    assert resolved(client, tokens["audit:read"], envelope["id"], record["explanation"]) == envelope

    replay = client.post(f"/v1/explanations/{envelope['id']}/replay", headers=bearer(tokens["audit:read"]))
    outcome = replay.get_json()
    assert replay.status_code == 200 and outcome["within_tolerance"] is True, outcome
    assert outcome["differences"] == []


def resolved(client: FlaskClient, token: str, record_id: str, value: Any) -> Any:
    """The recorded explanation with each blob reference replaced by the blob's values as JSON numbers
    (fetched the way an auditor does): what the client received."""
    if isinstance(value, dict) and "blob_sha256" in value:
        blob = client.get(f"/v1/explanations/{record_id}/blobs/{value['blob_sha256']}", headers=bearer(token))
        assert blob.status_code == 200 and value["encoding"] == "json"
        array = np.frombuffer(blob.get_data(), dtype=np.dtype(value["dtype"]).newbyteorder("<"))
        # float32 as JSON numbers the way the server writes them (orjson: shortest float32 form)
        return orjson.loads(orjson.dumps(array.reshape(value["shape"]), option=orjson.OPT_SERIALIZE_NUMPY))
    if isinstance(value, dict):
        return {k: resolved(client, token, record_id, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolved(client, token, record_id, v) for v in value]
    return value

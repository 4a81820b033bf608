"""A remote model's predictor failing: a timeout is a 504, a 5xx (after the bounded retries, counted by the
predictor), a wrong shape or no server a 502, each a problem document naming the endpoint and never its URL,
and nothing recorded; registration needs an answering predictor and a well-formed manifest."""

from __future__ import annotations

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from predictor_servers import free_port, posts, running_stub
from remote_fixtures import (  # noqa: F401 (fixtures)
    FEATURES,
    PROBLEM,
    REMOTE_NAME,
    bearer,
    fitted_fixture,
    register,
    remote_manifest,
    rows,
    v1_server_fixture,
)
from sklearn.pipeline import Pipeline
from tiny_models import tiny_manifest

from model_store.manifest import parse_manifest
from model_store.reference import to_parquet

FAULTS = {
    # mode: (status, words in the detail, POSTs the predictor receives with 2 retries)
    "slow": (504, "did not answer in 0.5 s", 1),
    "error": (502, "answered 503", 3),
    "shape": (502, "answered the wrong shape: predictions are not 2 numbers per row", 1),
    "scores": (502, "answered values outside [0, 1] (from -1.5 to 2.5) as class probabilities", 1),
}


@pytest.mark.parametrize("mode", [*FAULTS, "unreachable"])
def test_a_failing_predictor_is_a_502_or_504_and_nothing_is_recorded(
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    app: Flask,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
    v1_server: str,
) -> None:
    frame, _ = fitted
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", v1_server)
    store = app.extensions["candor"].store
    # registered here, not over HTTP (whose answer loads the model, reading the endpoint's settings then)
    manifest = parse_manifest(remote_manifest("tiny-remote", "v1"))
    store.registry.register_tabular(manifest, None, to_parquet(frame[FEATURES]))
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_TIMEOUT", "0.5")
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_RETRIES", "2")
    before = store.audit.count()
    body = {"instances": rows(frame, 2), "algorithm": "permutation", "max_evals": 50}
    url = "/v1/models/tiny-remote/versions/1/explain/shap"
    if mode == "unreachable":
        monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", f"http://127.0.0.1:{free_port()}")
        status, words, expected_posts = 502, "could not be reached", None
        response = client.post(url, json=body, headers=bearer(keys["explain"]))
    else:
        status, words, expected_posts = FAULTS[mode]
        with running_stub(mode) as base:
            monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", base)
            response = client.post(url, json=body, headers=bearer(keys["explain"]))
            received = posts(base)
        assert received == expected_posts, response.get_data(as_text=True)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    problem = response.get_json()
    assert problem["detail"].startswith(f"The predictor TINY ({REMOTE_NAME}) ")
    assert words in problem["detail"] and "127.0.0.1" not in problem["detail"]
    assert problem["type"].endswith("predictor-timeout" if status == 504 else "predictor-failed")
    assert store.audit.count() == before


def test_registration_needs_an_answering_predictor(
    monkeypatch: pytest.MonkeyPatch,
    client: FlaskClient,
    keys: dict[str, str],
    fitted: tuple[pd.DataFrame, Pipeline],
) -> None:
    frame, _ = fitted
    writer = keys["models:write"]
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_RETRIES", "0")
    refused = register(client, writer, remote_manifest("tiny-remote"), frame)
    assert refused.status_code == 502 and refused.mimetype == PROBLEM, refused.get_data(as_text=True)
    assert client.get("/v1/models/tiny-remote", headers=bearer(keys["explain"])).status_code == 404
    monkeypatch.delenv("CANDOR_PREDICTOR_TINY_URL")
    unset = register(client, writer, remote_manifest("tiny-remote"), frame)
    assert unset.status_code == 503 and "CANDOR_PREDICTOR_TINY_URL" in unset.get_json()["detail"]

    with_artifact = register(client, writer, remote_manifest("tiny-remote"), frame, b"not a model")
    assert with_artifact.status_code == 422 and "artifact" in with_artifact.get_json()["errors"]
    no_artifact = tiny_manifest("tiny-local")
    missing = register(client, writer, no_artifact, frame)
    assert missing.status_code == 422 and "artifact" in missing.get_json()["errors"]
    for wrong in ({"format": "remote"}, {"predictor": {"protocol": "v2", "model": "m", "endpoint": "TINY"}}):
        manifest = {**tiny_manifest("tiny-remote"), **wrong}
        refused = register(client, writer, manifest, frame)
        assert refused.status_code == 422 and "manifest.predictor" in refused.get_json()["errors"], (
            refused.get_json()
        )
    bad_endpoint = remote_manifest("tiny-remote", endpoint="lower-case")
    refused = register(client, writer, bad_endpoint, frame)
    assert refused.status_code == 422 and "manifest.predictor.endpoint" in refused.get_json()["errors"]

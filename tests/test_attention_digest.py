"""Attention records by digest (the default, ``CANDOR_AUDIT_ATTENTION=digest``): each weights array is kept
as its sha256, dtype and shape with ``"kept": false`` and no blob; ``full`` (setting or manifest) keeps the
blobs.

Oracles: the sha256 of the very bytes the client received (decoded from the answer's base64), the audit_blobs
table read with SQL, and the tiny BERT recomputed by the service. Every reader copes: the blob route is a 404
problem, the verifier counts digest-only references apart, an idempotent retry and the record's pictures
recompute and check the digests, replay compares digests (a recomputation one ulp away is a difference).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import sqlalchemy as sa
from flask import Flask
from text_oracles import (
    WHEEZING,
    assert_problem,
    bearer,
    manifest_text,
    tar_of_directory,
    text_app,
    tiny_bert_dir,
    tokens_for,
    upload,
)

from api.service.recording import with_recorded_arrays
from api.service.replay import compare
from model_store import array_codec
from model_store.errors import Conflict

ATTENTION = "/v1/models/triage/versions/1/explain/attention"
BODY = {"instances": [{"text": WHEEZING}], "encoding": "base64", "rollout": True}


class Served:
    def __init__(self, app: Flask) -> None:
        self.app = app
        self.tokens = tokens_for(app)
        self.client = app.test_client()

    def attention(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        return self.client.post(
            ATTENTION, json=body, headers={**bearer(self.tokens["explain"]), **(headers or {})}
        )

    def audit(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        return self.client.open(path, method=method, headers=bearer(self.tokens["audit:read"]), **kwargs)

    def blob_rows(self) -> int:
        with self.app.extensions["candor"].store.engine.connect() as connection:
            return int(connection.execute(sa.text("SELECT count(*) FROM audit_blobs")).scalar_one())

    def record(self, record_id: str) -> dict[str, Any]:
        response = self.audit(f"/v1/explanations/{record_id}")
        assert response.status_code == 200, response.get_json()
        return response.get_json()  # type: ignore[no-any-return]


@pytest.fixture
def serve(tmp_path: Path, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Make an app with settings overrides on this backend and upload the tiny BERT (manifest changes)."""
    made: list[Flask] = []

    def make(manifest: dict[str, Any] | None = None, **overrides: Any) -> Served:
        app = text_app(tmp_path / f"data-{len(made)}", database_url, **overrides)
        made.append(app)
        served = Served(app)
        models = app.extensions["candor"].store.keys.create("models", ["models:write"])[0]
        archive = tar_of_directory(tiny_bert_dir(tmp_path_factory))
        response = upload(app, models, archive, manifest_text(**(manifest or {})))
        assert response.status_code == 201, response.get_json()
        return served

    yield make
    for app in made:
        app.extensions["candor"].store.close()


def sent_arrays(envelope: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every base64 weights array of an answer by its place, decoded as the README tells clients to."""
    found: dict[str, np.ndarray] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and set(value) == {"dtype", "shape", "byte_order", "data"}:
            data = base64.b64decode(value["data"])
            found[path] = np.frombuffer(data, np.dtype(value["dtype"]).newbyteorder("<")).reshape(
                value["shape"]
            )
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}.{index}")

    walk(envelope, "")
    return found


def refs_at(explanation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every blob reference of a recorded explanation by its place."""
    found: dict[str, dict[str, Any]] = {}

    def walk(value: Any, path: str) -> None:
        if array_codec.is_reference(value):
            found[path] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}.{index}")

    walk(explanation, "")
    return found


def test_digest_by_default_keeps_the_sha256_of_the_bytes_sent_and_no_blob(serve: Any) -> None:
    served = serve()
    response = served.attention(BODY)
    assert response.status_code == 200, response.get_json()
    envelope = response.get_json()
    sent = sent_arrays(envelope)
    refs = refs_at(served.record(envelope["id"])["explanation"])
    assert len(sent) == 5 and set(refs) == set(sent)  # 4 heads and the rollout
    for path, array in sent.items():
        ref = refs[path]
        assert ref["kept"] is False
        assert ref["blob_sha256"] == hashlib.sha256(array.tobytes()).hexdigest()
        assert (ref["dtype"], ref["shape"], ref["bytes"]) == ("float32", list(array.shape), array.nbytes)
    assert served.blob_rows() == 0
    # the blob route: a clear 404 saying the weights were kept by digest
    digest = next(iter(refs.values()))["blob_sha256"]
    missing = served.audit(f"/v1/explanations/{envelope['id']}/blobs/{digest}")
    problem = assert_problem(missing, 404)
    assert "by digest only" in problem["detail"] and "CANDOR_AUDIT_ATTENTION=full" in problem["detail"]
    # the verifier checks no blob and counts the digest-only references apart
    verdict = served.audit("/v1/audit/verify").get_json()
    assert verdict["ok"] is True, verdict
    assert verdict["blobs"] == {"checked": 0, "distinct": 0, "digest_only": 5, "first_break": None}
    # replay recomputes and compares the digests: bit-identical on this machine
    replay = served.audit(f"/v1/explanations/{envelope['id']}/replay", method="POST", json={}).get_json()
    assert replay["identical"] is True and replay["max_abs_diff"] == 0.0 and replay["within_tolerance"]
    assert replay["by_digest"] == {"compared": 5, "differing": []} and replay["differences"] == []


@pytest.mark.parametrize(
    ("setting", "manifest", "kept"),
    [("full", None, True), ("digest", "full", True), ("full", "digest", False), ("digest", "digest", False)],
)
def test_the_setting_and_the_manifest_which_wins(
    serve: Any, setting: str, manifest: str | None, kept: bool
) -> None:
    served = serve({"audit_attention": manifest} if manifest else None, audit_attention=setting)
    envelope = served.attention(BODY).get_json()
    refs = refs_at(served.record(envelope["id"])["explanation"])
    assert len(refs) == 5
    assert all(("kept" not in ref) is kept for ref in refs.values())
    assert served.blob_rows() == (5 if kept else 0)
    verdict = served.audit("/v1/audit/verify").get_json()["blobs"]
    assert (verdict["checked"], verdict["digest_only"]) == ((5, 0) if kept else (0, 5))
    if kept:  # exactly today's behaviour: the blob holds the bytes sent
        path, array = next(iter(sent_arrays(envelope).items()))
        blob = served.audit(f"/v1/explanations/{envelope['id']}/blobs/{refs[path]['blob_sha256']}")
        assert blob.status_code == 200 and blob.get_data() == array.tobytes()


def test_a_bad_manifest_or_setting_value_is_refused(
    serve: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    served = serve()
    models = served.app.extensions["candor"].store.keys.create("m2", ["models:write"])[0]
    archive = tar_of_directory(tiny_bert_dir(tmp_path_factory))
    response = upload(served.app, models, archive, manifest_text(audit_attention="some"))
    assert_problem(response, 422, "manifest.audit_attention")
    with pytest.raises(ValueError, match="CANDOR_AUDIT_ATTENTION"):
        text_app(tmp_path / "bad", audit_attention="blobs")


def test_an_idempotent_retry_recomputes_and_answers_the_same_json_value(serve: Any) -> None:
    served = serve()
    headers = {"Idempotency-Key": "digest-retry"}
    first = served.attention(BODY, headers)
    again = served.attention(BODY, headers)
    assert first.status_code == again.status_code == 200
    assert orjson.loads(again.get_data()) == orjson.loads(first.get_data())
    assert served.blob_rows() == 0


def test_record_pictures_of_a_digest_only_record_are_drawn_from_the_recomputation(serve: Any) -> None:
    served = serve()
    record_id = served.attention(BODY).get_json()["id"]
    plot = served.audit(f"/v1/explanations/{record_id}/plot?view=head&layer=1&head=0")
    assert plot.status_code == 200 and plot.mimetype == "image/svg+xml", plot.get_data()[:300]
    view = served.audit(f"/v1/explanations/{record_id}/bertviz?view=head")
    assert view.status_code == 200, view.get_data()[:300]


def test_a_recomputation_one_ulp_away_is_a_difference(serve: Any) -> None:
    """Another machine's recomputation (simulated: the real one with one weight moved by one ulp) matches
    no digest: replay's comparison lists the place and the retry's reader refuses with a 409."""
    served = serve()
    envelope = served.attention(BODY).get_json()
    context = served.app.extensions["candor"]
    record = context.store.audit.get(envelope["id"])
    recomputed = context.service.recomputed(record)
    arrays = array_codec.arrays_at(recomputed)
    moved = "results.0.attention.2.weights"
    arrays[moved][0, 1] = np.nextafter(arrays[moved][0, 1], np.float32(1))  # a copy the service holds no more

    outcome = compare(record["explanation"], recomputed, "attention")
    place = "/" + moved.replace(".", "/")
    assert outcome["identical"] is False and outcome["within_tolerance"] is False
    assert outcome["differences"] == [place] and outcome["by_digest"] == {"compared": 5, "differing": [place]}
    assert outcome["max_abs_diff"] == 0.0  # nothing else differs; the digest's distance is not measurable
    with pytest.raises(Conflict, match=moved):
        with_recorded_arrays(context.store.sessions, record, lambda _record: recomputed)
    unchanged = context.service.recomputed(record)  # the honest recomputation is the recorded one
    read = with_recorded_arrays(context.store.sessions, record, lambda _record: unchanged)
    assert np.array_equal(array_codec.arrays_at(read)[moved], sent_arrays(envelope)[moved])


def test_a_record_that_also_hashed_its_inputs_has_no_picture_but_replays_with_them(serve: Any) -> None:
    served = serve({"store_inputs": "hash"})
    record_id = served.attention(BODY).get_json()["id"]
    plot = served.audit(f"/v1/explanations/{record_id}/plot?view=head&layer=1&head=0")
    assert "nothing to draw" in assert_problem(plot, 404)["detail"]
    replay = served.audit(
        f"/v1/explanations/{record_id}/replay", method="POST", json={"instances": BODY["instances"]}
    )
    outcome = replay.get_json()
    assert outcome["identical"] is True and outcome["by_digest"] == {"compared": 5, "differing": []}, outcome

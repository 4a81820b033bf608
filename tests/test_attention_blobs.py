"""Attention as a safetensors answer, and attention weights kept out of the audit record as content-addressed
blobs: checked against the model's own ``output_attentions``, on SQLite and PostgreSQL.

- ``encoding: "safetensors"``: the body is a safetensors file that ``safetensors.numpy.load`` reads; float32
  equals ``output_attentions``, float16 is within float16's rounding of it; the envelope is in
  ``__metadata__["explanation"]`` with each weights array replaced by its tensor's name.
- Every encoding's record keeps a reference ``{"blob_sha256", "dtype", "shape", ...}`` per weights array; the
  blob (fetched by an auditor) holds exactly the values sent; verify (HTTP and CLI) finds a changed byte or a
  missing blob; replay compares the decoded arrays.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
import sqlalchemy as sa
from flask import Flask
from text_oracles import (
    WHEEZING,
    abnar_zuidema_rollout,
    assert_problem,
    attentions,
    bearer,
    decode_weights,
    float16_tolerance,
    tar_of_directory,
    text_app,
    tiny_bert_dir,
    tokens_for,
    upload,
)

from api.jobs.submit import validate_options
from api.ops.cli import main as cli_main
from model_store.errors import InvalidInput

ATTENTION = "/v1/models/triage/versions/1/explain/attention"
SECOND = "Routine follow up, medication refill requested."


class Text:
    def __init__(self, app: Flask, tokens: dict[str, str], source: Path, url: str) -> None:
        self.app, self.tokens, self.source, self.url = app, tokens, source, url
        self.client = app.test_client()

    def attention(self, body: dict[str, Any]) -> Any:
        return self.client.post(ATTENTION, json=body, headers=bearer(self.tokens["explain"]))

    def audit(self, path: str) -> Any:
        return self.client.get(path, headers=bearer(self.tokens["audit:read"]))

    def execute(self, statement: str, **params: Any) -> None:
        with self.app.extensions["candor"].store.engine.begin() as connection:
            connection.execute(sa.text(statement), params)


@pytest.fixture
def text(tmp_path: Path, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Text]:
    """The tiny BERT uploaded through REST into a fresh app on each backend."""
    source = tiny_bert_dir(tmp_path_factory)
    app = text_app(tmp_path / "data", database_url, audit_attention="full")  # blobs are tested here
    tokens = tokens_for(app)
    tokens["admin"] = app.extensions["candor"].store.keys.create("text-admin", ["admin"])[0]
    assert upload(app, tokens["models:write"], tar_of_directory(source)).status_code == 201
    yield Text(app, tokens, source, database_url)
    app.extensions["candor"].store.close()


def metadata_of(body: bytes) -> dict[str, Any]:
    """The safetensors header's ``__metadata__`` (8-byte little-endian length, then the JSON header)."""
    size = int.from_bytes(body[:8], "little")
    return json.loads(body[8 : 8 + size])["__metadata__"]  # type: ignore[no-any-return]


def assert_as_sent(got: np.ndarray, expected: np.ndarray, dtype: str) -> None:
    if dtype == "float32":  # the model's own float32 values, bit for bit
        np.testing.assert_array_equal(got, expected.astype(np.float32))
    else:
        assert got.dtype == np.float16
        assert np.all(np.abs(got.astype(float) - expected) <= float16_tolerance(expected))


# -- the safetensors answer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_safetensors_answer_is_the_models_own_output_attentions(text: Text, dtype: str) -> None:
    texts = [WHEEZING, SECOND]
    response = text.attention(
        {
            "instances": [{"text": t} for t in texts],
            "encoding": "safetensors",
            "dtype": dtype,
            "rollout": True,
        }
    )
    assert response.status_code == 200, response.get_data()[:500]
    assert response.mimetype == "application/octet-stream"
    body = response.get_data()
    tensors = safetensors.numpy.load(body)
    meta = metadata_of(body)
    assert meta["format"] == "candor-explanation"
    envelope = json.loads(meta["explanation"])
    assert envelope["kind"] == "attention" and envelope["method"]["params"]["encoding"] == "safetensors"
    names = []
    for index, (note, result) in enumerate(zip(texts, envelope["results"], strict=True)):
        expected = attentions(text.source, note)
        assert [(e["layer"], e["head"]) for e in result["attention"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
        for k, entry in enumerate(result["attention"]):
            assert entry["weights"] == f"results.{index}.attention.{k}.weights"
            assert_as_sent(tensors[entry["weights"]], expected[entry["layer"], entry["head"]], dtype)
            names.append(entry["weights"])
        assert result["rollout"]["weights"] == f"results.{index}.rollout.weights"
        rolled = tensors[result["rollout"]["weights"]].astype(float)
        np.testing.assert_allclose(rolled, abnar_zuidema_rollout(expected), rtol=0, atol=1e-3)
        names.append(result["rollout"]["weights"])
    assert sorted(tensors) == sorted(names)
    record = text.app.extensions["candor"].store.audit.get(envelope["id"])
    assert record["request"]["options"]["encoding"] == "safetensors"


def test_safetensors_mean_over_heads(text: Text) -> None:
    response = text.attention(
        {"instances": [{"text": WHEEZING}], "encoding": "safetensors", "aggregate": "mean"}
    )
    assert response.status_code == 200
    tensors = safetensors.numpy.load(response.get_data())
    envelope = json.loads(metadata_of(response.get_data())["explanation"])
    expected = attentions(text.source, WHEEZING)
    for entry in envelope["results"][0]["attention"]:
        assert entry["head"] == "mean"
        mean = expected[entry["layer"]].mean(axis=0)
        np.testing.assert_allclose(tensors[entry["weights"]], mean, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"encoding": "safetensors", "format": "bertviz"}, "encoding"),
        ({"encoding": "safetensors", "dtype": "float64"}, "dtype"),
        ({"encoding": "safetensor"}, "encoding"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_bad_safetensors_combinations_are_422(text: Text, options: dict[str, Any], field: str) -> None:
    assert_problem(text.attention({"instances": [{"text": WHEEZING}], **options}), 422, field, nested=True)


def test_a_batch_job_cannot_ask_for_a_safetensors_answer() -> None:
    """A job writes JSON lines: its options keep to json and base64."""
    with pytest.raises(InvalidInput) as refused:
        validate_options("attention", {"encoding": "safetensors"})
    assert "options.encoding" in refused.value.errors


# -- the record and its blobs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [{}, {"encoding": "base64"}, {"encoding": "base64", "dtype": "float16"}, {"encoding": "safetensors"}],
    ids=["json", "base64", "base64-float16", "safetensors"],
)
def test_records_keep_weights_as_blobs_that_hold_the_values_sent(text: Text, options: dict[str, Any]) -> None:
    response = text.attention({"instances": [{"text": WHEEZING}], "rollout": True, **options})
    assert response.status_code == 200
    if options.get("encoding") == "safetensors":
        tensors = safetensors.numpy.load(response.get_data())
        envelope = json.loads(metadata_of(response.get_data())["explanation"])
        sent = [tensors[e["weights"]] for e in envelope["results"][0]["attention"]]
        sent.append(tensors[envelope["results"][0]["rollout"]["weights"]])
    else:
        envelope = response.get_json()
        result = envelope["results"][0]
        sent = [decode_weights(e["weights"]) for e in [*result["attention"], result["rollout"]]]
    record = text.audit(f"/v1/explanations/{envelope['id']}").get_json()
    result = record["explanation"]["results"][0]
    refs = [e["weights"] for e in result["attention"]] + [result["rollout"]["weights"]]
    assert len(refs) == len(sent) == 5
    dtype = options.get("dtype", "float32")
    for ref, values in zip(refs, sent, strict=True):
        assert ref["dtype"] == dtype and ref["byte_order"] == "little"
        assert ref["encoding"] == options.get("encoding", "json")
        blob = text.audit(f"/v1/explanations/{envelope['id']}/blobs/{ref['blob_sha256']}")
        assert blob.status_code == 200 and blob.mimetype == "application/octet-stream"
        data = blob.get_data()
        assert hashlib.sha256(data).hexdigest() == ref["blob_sha256"] and len(data) == ref["bytes"]
        stored = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(ref["shape"])
        np.testing.assert_array_equal(stored, np.asarray(values, dtype=dtype))  # exactly what was sent
    # everything else is the envelope as returned
    without = {k: v for k, v in record["explanation"].items() if k != "results"}
    assert without == {k: v for k, v in envelope.items() if k != "results"}
    assert result["tokens"] == envelope["results"][0]["tokens"]
    verdict = text.audit("/v1/audit/verify").get_json()
    assert verdict["ok"] is True and verdict["blobs"] == {
        "checked": 5,
        "distinct": 5,
        "digest_only": 0,
        "first_break": None,
    }


@pytest.mark.parametrize(
    "options",
    [{}, {"encoding": "base64", "dtype": "float16"}, {"encoding": "safetensors"}, {"format": "bertviz"}],
    ids=["json", "base64-float16", "safetensors", "bertviz"],
)
def test_a_retried_attention_request_is_answered_from_its_blobs(text: Text, options: dict[str, Any]) -> None:
    """With an ``Idempotency-Key``, a retry's weights come from the record's blobs, encoded as asked."""
    body = {"instances": [{"text": WHEEZING}], "rollout": options.get("format") != "bertviz", **options}
    headers = {**bearer(text.tokens["explain"]), "Idempotency-Key": "note-1"}
    first = text.client.post(ATTENTION, json=body, headers=headers)
    again = text.client.post(ATTENTION, json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert "Idempotent-Replayed" not in first.headers and again.headers["Idempotent-Replayed"] == "true"
    assert again.mimetype == first.mimetype
    if options.get("encoding") == "safetensors":
        assert (
            safetensors.numpy.load(again.get_data()).keys() == safetensors.numpy.load(first.get_data()).keys()
        )
        for name, values in safetensors.numpy.load(first.get_data()).items():
            replayed = safetensors.numpy.load(again.get_data())[name]
            assert replayed.dtype == values.dtype
            np.testing.assert_array_equal(replayed, values)
        first_meta, again_meta = metadata_of(first.get_data()), metadata_of(again.get_data())
        assert json.loads(again_meta["explanation"]) == json.loads(first_meta["explanation"])
    else:
        assert again.get_json() == first.get_json()  # base64 text and JSON numbers alike
    verdict = text.audit("/v1/audit/verify").get_json()
    assert verdict["ok"] is True and verdict["checked"] == 1


def test_blob_route_answers_only_for_blobs_the_record_refers_to(text: Text) -> None:
    first = text.attention({"instances": [{"text": WHEEZING}], "heads": [0]}).get_json()
    second = text.attention({"instances": [{"text": SECOND}], "heads": [0]}).get_json()
    other = text.audit(f"/v1/explanations/{second['id']}").get_json()
    foreign = other["explanation"]["results"][0]["attention"][0]["weights"]["blob_sha256"]
    assert_problem(text.audit(f"/v1/explanations/{first['id']}/blobs/{foreign}"), 404)
    assert_problem(text.audit(f"/v1/explanations/{first['id']}/blobs/{'0' * 64}"), 404)
    own = text.audit(f"/v1/explanations/{first['id']}").get_json()
    sha = own["explanation"]["results"][0]["attention"][0]["weights"]["blob_sha256"]
    path = f"/v1/explanations/{first['id']}/blobs/{sha}"
    forbidden = text.client.get(path, headers=bearer(text.tokens["explain"]))
    assert_problem(forbidden, 403)
    assert text.audit(path).status_code == 200


def test_same_weights_are_stored_once(text: Text) -> None:
    for _ in range(2):
        assert (
            text.attention({"instances": [{"text": WHEEZING}], "encoding": "safetensors"}).status_code == 200
        )
    with text.app.extensions["candor"].store.engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM audit_blobs")).scalar_one()
    assert count == 2 * 2  # 2 layers x 2 heads, whatever the number of records
    verdict = text.audit("/v1/audit/verify").get_json()
    assert verdict["ok"] is True and verdict["blobs"]["checked"] == 8 and verdict["blobs"]["distinct"] == 4


def _blob_bytes(text: Text, sha: str) -> bytes:
    with text.app.extensions["candor"].store.engine.connect() as connection:
        data = connection.execute(sa.text("SELECT data FROM audit_blobs WHERE sha256 = :s"), {"s": sha})
        return bytes(data.scalar_one())


@pytest.mark.parametrize("damage", ["one byte", "missing"])
def test_verify_finds_a_changed_or_missing_blob(
    text: Text, damage: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [
        text.attention({"instances": [{"text": t}], "encoding": "base64"}).get_json()["id"]
        for t in (SECOND, WHEEZING)
    ]
    record = text.audit(f"/v1/explanations/{ids[1]}").get_json()
    sha = record["explanation"]["results"][0]["attention"][2]["weights"]["blob_sha256"]
    assert text.audit("/v1/audit/verify").get_json()["ok"] is True
    if damage == "one byte":
        data = bytearray(_blob_bytes(text, sha))
        data[len(data) // 2] ^= 0x01
        text.execute("UPDATE audit_blobs SET data = :d WHERE sha256 = :s", d=bytes(data), s=sha)
        reason = f"the blob {sha} does not match its sha256"
    else:
        text.execute("DELETE FROM audit_blobs WHERE sha256 = :s", s=sha)
        reason = f"the blob {sha} is missing"
    verdict = text.audit("/v1/audit/verify").get_json()
    assert verdict["ok"] is False
    assert verdict["first_break"] == {"seq": record["seq"], "id": ids[1], "reason": reason}
    assert_problem(text.audit(f"/v1/explanations/{ids[1]}/blobs/{sha}"), 409 if damage == "one byte" else 404)
    assert verdict["blobs"]["first_break"] == verdict["first_break"]
    assert verdict["checked"] == 2  # the chain itself still verifies: the blob is what broke
    monkeypatch.setenv("CANDOR_DATA_DIR", str(text.app.extensions["candor"].settings.data_dir))
    monkeypatch.setenv("CANDOR_DATABASE_URL", text.url)
    capsys.readouterr()
    assert cli_main(["audit", "verify"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False and printed["first_break"]["reason"] == reason


@pytest.mark.parametrize(
    "options",
    [{}, {"encoding": "base64", "dtype": "float16"}, {"encoding": "safetensors", "aggregate": "max"}],
    ids=["json", "base64-float16", "safetensors-max"],
)
def test_replay_compares_the_decoded_weights(text: Text, options: dict[str, Any]) -> None:
    response = text.attention({"instances": [{"text": WHEEZING}], "rollout": True, **options})
    if options.get("encoding") == "safetensors":
        explanation_id = json.loads(metadata_of(response.get_data())["explanation"])["id"]
    else:
        explanation_id = response.get_json()["id"]
    replay = text.client.post(
        f"/v1/explanations/{explanation_id}/replay", headers=bearer(text.tokens["audit:read"])
    )
    outcome = replay.get_json()
    assert replay.status_code == 200 and outcome["within_tolerance"] is True, outcome
    assert outcome["differences"] == [] and outcome["max_abs_diff"] <= 1e-6


def test_replay_reports_weights_that_differ_from_the_blob(text: Text) -> None:
    """A blob whose values differ (here: rewritten under a forged record would break the chain, so the
    comparison is checked on the blob as the replay reads it) shows as a numeric difference."""
    envelope = text.attention({"instances": [{"text": WHEEZING}], "heads": [0], "layers": [0]}).get_json()
    record = text.audit(f"/v1/explanations/{envelope['id']}").get_json()
    sha = record["explanation"]["results"][0]["attention"][0]["weights"]["blob_sha256"]
    values = np.frombuffer(_blob_bytes(text, sha), dtype="<f4").copy()
    values[0] += 0.25
    text.execute("UPDATE audit_blobs SET data = :d WHERE sha256 = :s", d=values.tobytes(), s=sha)
    replay = text.client.post(
        f"/v1/explanations/{envelope['id']}/replay", headers=bearer(text.tokens["audit:read"])
    )
    outcome = replay.get_json()
    assert outcome["within_tolerance"] is False and outcome["max_abs_diff"] == pytest.approx(0.25, abs=1e-6)


def test_only_the_explanation_holds_references(text: Text) -> None:
    """A client's JSON (an instance's extra field shaped like a reference) is never read as one."""
    fake = {"blob_sha256": "0" * 64, "dtype": "float32", "shape": [1], "bytes": 4}
    response = text.attention({"instances": [{"text": WHEEZING, "meta": fake}], "heads": [0]})
    assert response.status_code in (200, 422)
    verdict = text.audit("/v1/audit/verify").get_json()
    assert verdict["ok"] is True, verdict
    if response.status_code == 200:
        record_id = response.get_json()["id"]
        assert_problem(text.audit(f"/v1/explanations/{record_id}/blobs/{'0' * 64}"), 404)


def _stored_blobs(text: Text) -> set[str]:
    with text.app.extensions["candor"].store.engine.connect() as connection:
        return {str(sha) for sha in connection.execute(sa.text("SELECT sha256 FROM audit_blobs")).scalars()}


def test_purge_deletes_the_blobs_only_purged_records_referred_to(
    text: Text, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old records are purged by the CLI: their blobs go too, unless a record kept refers to the same
    weights; what remains verifies, blobs included."""
    body = {"encoding": "safetensors", "dtype": "float32"}
    statuses = [text.attention({"instances": [{"text": t}], **body}).status_code for t in (SECOND, WHEEZING)]
    assert statuses == [200, 200]
    old = _stored_blobs(text)
    assert len(old) == 2 * 2 * 2  # two notes, 2 layers x 2 heads each
    # made old (a changed time would break the log's check, but these records are the ones purged)
    text.execute("UPDATE explanation_records SET recorded_at = :t", t=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    kept = text.attention({"instances": [{"text": WHEEZING}], "encoding": "base64"}).get_json()["id"]
    kept_refs = {
        entry["weights"]["blob_sha256"]
        for entry in text.audit(f"/v1/explanations/{kept}").get_json()["explanation"]["results"][0][
            "attention"
        ]
    }
    assert kept_refs < old, "the same note's weights are the blobs already stored"

    monkeypatch.setenv("CANDOR_DATA_DIR", str(text.app.extensions["candor"].settings.data_dir))
    monkeypatch.setenv("CANDOR_DATABASE_URL", text.url)
    capsys.readouterr()
    assert cli_main(["audit", "purge", "--days", "30"]) == 0
    assert "deleted 0 job chunks and 4 blobs no record refers to" in capsys.readouterr().out
    assert _stored_blobs(text) == kept_refs
    verdict = text.audit("/v1/audit/verify").get_json()
    assert (
        verdict["ok"] is True and verdict["checked"] == 3
    )  # the purged leaves (hashes only) and the kept one
    assert verdict["blobs"] == {"checked": 4, "distinct": 4, "digest_only": 0, "first_break": None}


@pytest.mark.parametrize("damage", ["one byte", "missing"])
def test_a_retry_whose_blob_was_damaged_says_so(text: Text, damage: str) -> None:
    """A keyed retry never serves weights the chain contradicts: a changed blob is a 409, a missing one a
    404, each naming the blob (not taken for a purged record and explained anew)."""
    headers = {**bearer(text.tokens["explain"]), "Idempotency-Key": f"damaged-{damage.replace(' ', '-')}"}
    body = {"instances": [{"text": WHEEZING}], "encoding": "base64"}
    first = text.client.post(ATTENTION, json=body, headers=headers)
    assert first.status_code == 200
    record = text.audit(f"/v1/explanations/{first.get_json()['id']}").get_json()
    sha = record["explanation"]["results"][0]["attention"][2]["weights"]["blob_sha256"]
    if damage == "one byte":
        data = bytearray(_blob_bytes(text, sha))
        data[0] ^= 0x01
        text.execute("UPDATE audit_blobs SET data = :d WHERE sha256 = :s", d=bytes(data), s=sha)
    else:
        text.execute("DELETE FROM audit_blobs WHERE sha256 = :s", s=sha)
    again = text.client.post(ATTENTION, json=body, headers=headers)
    assert_problem(again, 409 if damage == "one byte" else 404)
    assert sha in again.get_json()["detail"]
    listed = text.audit("/v1/explanations?kind=attention").get_json()
    assert [item["id"] for item in listed["items"]] == [first.get_json()["id"]]  # nothing recorded anew


def test_the_record_plot_draws_from_the_blobs(text: Text) -> None:
    """A recorded attention map is drawn from its blobs; a missing blob is a 404, a changed one a 409."""
    record_id = text.attention({"instances": [{"text": WHEEZING}], "encoding": "base64"}).get_json()["id"]
    plot = f"/v1/explanations/{record_id}/plot?view=head&layer=1&head=0"
    drawn = text.audit(plot)
    assert drawn.status_code == 200 and drawn.mimetype == "image/svg+xml", drawn.data[:300]
    record = text.audit(f"/v1/explanations/{record_id}").get_json()
    sha = record["explanation"]["results"][0]["attention"][2]["weights"]["blob_sha256"]
    data = bytearray(_blob_bytes(text, sha))
    data[0] ^= 0x01
    text.execute("UPDATE audit_blobs SET data = :d WHERE sha256 = :s", d=bytes(data), s=sha)
    assert_problem(text.audit(plot), 409)
    text.execute("DELETE FROM audit_blobs WHERE sha256 = :s", s=sha)
    assert_problem(text.audit(plot), 404)

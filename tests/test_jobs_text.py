"""A batch job on a text model: rows are texts (one ``text`` column), explained one by one; each result line
equals what the explain endpoint answers for that text alone."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_jobs import (  # noqa: F401 (dask_client: a fixture)
    bearer,
    csv_bytes,
    dask_client,
    job_records,
    problem,
    result_lines,
    run_jobs,
    submit_file,
)

from model_store import array_codec, audit_blobs


@pytest.mark.parametrize("audit_attention", ["full", "digest"])
def test_attention_job_on_a_text_model(
    make_app: Any,
    tmp_path: Path,
    dask_client: Any,  # noqa: F811
    audit_attention: str,
) -> None:
    """Text rows (one ``text`` column) run one by one; each line equals the explain endpoint's answer."""
    from tiny_text import build_tiny_bert, notes, tiny_manifest

    from model_store.manifest import parse_manifest
    from model_store.text.files import read_directory

    app = make_app(job_chunk_rows=5, audit_attention=audit_attention)
    context = app.extensions["candor"]
    source = build_tiny_bert(tmp_path / "tiny-bert")
    context.store.registry.register_text(parse_manifest(tiny_manifest()), read_directory(source, 200, 10**9))
    token = context.store.keys.create("jobs", ["explain"])[0]
    client = app.test_client()
    texts = notes(5)[["text"]]
    options = {"aggregate": "mean", "layers": [1]}
    submitted = submit_file(
        client, token, csv_bytes(texts), kind="attention", options=options, model="triage"
    )
    assert submitted.status_code == 202, submitted.data
    bad = submit_file(
        client, token, csv_bytes(texts), kind="attention", options={"layers": [7]}, model="triage"
    )
    assert "options.layers" in " ".join(problem(bad, 422)["errors"])
    assert run_jobs(app, dask_client) == 1
    job = client.get(f"/v1/jobs/{submitted.get_json()['id']}", headers=bearer(token)).get_json()
    assert job["status"] == "succeeded", job
    assert job["summary"]["rows_ok"] == 5 and job["summary"]["truncated"] == 0
    lines = result_lines(client, token, job["id"])
    assert [line["row"] for line in lines] == list(range(5))
    records = job_records(app, job["id"])
    assert len(records) == 5
    # the records keep the weights as blob references, as the explain endpoint's do, and (whatever
    # CANDOR_AUDIT_ATTENTION says: the job's result is read from its records) the blobs hold the very values
    # of the result lines; the trail (log and blobs) verifies. Checked before any explain request below could
    # store the same blobs itself.
    blobs = audit_blobs.AuditBlobs(context.store.sessions)
    by_row = {record["source"]["row"]: record for record in records}
    for line in lines:
        ref = by_row[line["row"]]["explanation"]["results"][0]["attention"][0]["weights"]
        assert array_codec.is_reference(ref), ref
        sent = np.array(line["result"]["attention"][0]["weights"], dtype=np.float32)
        assert ref.get("kept", True) is True
        assert ref["blob_sha256"] == hashlib.sha256(sent.tobytes()).hexdigest()
        stored = array_codec.array_of(ref, blobs.checked(ref["blob_sha256"]))
        assert stored.dtype == np.float32 and np.array_equal(stored, sent)
    verdict = audit_blobs.verify_trail(context.store.audit_log)
    assert verdict["ok"] is True and verdict["blobs"]["checked"] >= 5, verdict
    assert verdict["blobs"]["digest_only"] == 0, verdict
    for line, text in zip(lines, texts["text"], strict=True):
        alone = client.post(
            "/v1/models/triage/versions/1/explain/attention",
            json={"instances": [{"text": text}], **options},
            headers=bearer(token),
        ).get_json()["results"][0]
        assert [t["token"] for t in line["result"]["tokens"]] == [t["token"] for t in alone["tokens"]]
        got = np.array(line["result"]["attention"][0]["weights"], dtype=float)
        want = np.array(alone["attention"][0]["weights"], dtype=float)
        assert np.abs(got - want).max() <= 1e-6

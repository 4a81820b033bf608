"""What an explanation record holds: built from the request, the explanation and the model version."""

from __future__ import annotations

import dataclasses
from functools import cache
from importlib import metadata
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from api.methods.registry import spec
from explainers.envelope import Explanation
from model_store import array_codec
from model_store.array_codec import Blob
from model_store.audit import RecordDraft, canonical_json, sha256_hex
from model_store.audit_blobs import AuditBlobs
from model_store.errors import NotFound
from model_store.record_format import compact
from model_store.store import Store
from model_store.versions import VersionInfo


@cache
def service_version() -> str:
    try:
        return metadata.version("candor")
    except metadata.PackageNotFoundError:
        return "unknown"


def request_sha256(instances: list[Any], options: dict[str, Any]) -> str:
    """The hash of a request as recorded: canonical JSON of its instances and options."""
    return sha256_hex(canonical_json({"instances": instances, "options": options}))


def recorded_request(info: VersionInfo, instances: list[Any], options: dict[str, Any]) -> dict[str, Any]:
    """The request as the manifest allows it to be kept: in full, or (``store_inputs: hash``) its options and
    the sha256 of its instances only."""
    if info.manifest_data.get("store_inputs", "full") == "hash":
        return {
            "options": options,
            "instances_sha256": sha256_hex(canonical_json(instances)),
            "instance_count": len(instances),
        }
    return {"options": options, "instances": instances}


def warnings_of(explanation: Explanation) -> list[str]:
    """What a reader of the record must know about the inputs (for now: truncated texts)."""
    out = []
    for index, result in enumerate(explanation.results):
        if result.get("truncated"):
            out.append(f"instance {index}: text truncated from {result.get('original_tokens')} tokens")
    return out


def draft_for(
    method: str,
    explanation: Explanation,
    info: VersionInfo,
    instances: list[Any],
    options: dict[str, Any],
    key_id: str | None,
    source: dict[str, Any] | None = None,
) -> RecordDraft:
    """The record of one explanation (its id is the envelope's id), in the stored form
    (``model_store.record_format``): the envelope once, the parts many records share named by digest."""
    content, parts = compact(
        {
            "model": {
                "name": info.name,
                "version": info.version,
                "artifact_sha256": info.artifact_sha256,
                "reference_sha256": info.reference_sha256,
            },
            "source": source or {"type": "api"},
            "request": recorded_request(info, instances, options),
            "request_sha256": request_sha256(instances, options),
            "explanation": explanation.to_dict(),
            "service_version": service_version(),
            "warnings": warnings_of(explanation),
        }
    )
    return RecordDraft(
        id=explanation.id,
        kind=method,
        model_name=info.name,
        model_version=info.version,
        key_id=key_id,
        status="ok",
        content=content,
        parts=parts,
    )


def out_of_line(draft: RecordDraft) -> tuple[RecordDraft, list[Blob]]:
    """``draft`` with its arrays out of line: for methods that keep them so (``arrays_out_of_line``) every
    array of the explanation's results becomes a reference to a blob of its bytes (both to be stored in one
    transaction); other kinds are recorded whole."""
    if not spec(draft.kind).arrays_out_of_line:
        return draft, []
    envelope = draft.content["explanation"]
    encoding = draft.parts["params"].get("encoding", "json")
    results, blobs = array_codec.referenced(envelope["results"], encoding)
    content = {**draft.content, "explanation": {**envelope, "results": results}}
    return dataclasses.replace(draft, content=content), blobs


def recorded_envelope(store: Store, record_id: str) -> dict[str, Any] | None:
    """The explanation a record holds, as its client received it (the same JSON value; keys may come in
    another order), or None when the record is gone (purged). Arrays kept as blobs are read back together,
    checked against their sha256 (a missing blob is a 404, a changed one a 409, as the record's plot
    answers), and encoded as the request asked."""
    try:
        record = store.audit.get(record_id)
    except NotFound:
        return None
    envelope: dict[str, Any] = record["explanation"]
    if not spec(record["kind"]).arrays_out_of_line:
        return envelope
    return array_codec.as_sent(with_recorded_arrays(store.sessions, envelope))


def with_recorded_arrays(sessions: sessionmaker[Session], explanation: Any) -> Any:
    """``explanation`` (as recorded) with its blob references replaced by their arrays, every blob read in
    one session and checked against its sha256 (``NotFound`` when missing, ``Conflict`` when changed)."""
    stored = AuditBlobs(sessions).all_checked(array_codec.digests(explanation))
    return array_codec.with_arrays(explanation, stored.__getitem__)

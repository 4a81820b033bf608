"""What an explanation record holds: built from the request, the explanation and the model version."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from importlib import metadata
from typing import Any

import orjson
from sqlalchemy.orm import Session, sessionmaker

from api.methods.registry import spec
from api.service.remote_statement import remote_statement
from explainers.envelope import Explanation
from model_store import array_codec
from model_store.array_codec import Blob
from model_store.audit import RecordDraft, canonical_json, sha256_hex
from model_store.audit_blobs import AuditBlobs
from model_store.errors import Conflict, NotFound
from model_store.record_format import compact
from model_store.store import Store
from model_store.versions import VersionInfo

Recompute = Callable[[dict[str, Any]], dict[str, Any]]
"""The explanation a record describes computed again, as ``Explanation.to_dict`` (arrays as sent)."""


@cache
def service_version() -> str:
    try:
        return metadata.version("candor")
    except metadata.PackageNotFoundError:
        return "unknown"


def request_sha256(instances: list[Any] | orjson.Fragment, options: dict[str, Any]) -> str:
    """The hash of a request as recorded: canonical JSON of its instances (or their canonical JSON, as a
    ``Fragment``) and options."""
    return sha256_hex(canonical_json({"instances": instances, "options": options}))


def recorded_request(
    info: VersionInfo, instances: list[Any], options: dict[str, Any], sent: orjson.Fragment | None = None
) -> dict[str, Any]:
    """The request as the manifest allows it to be kept: in full, or (``store_inputs: hash``) its options and
    the sha256 of its instances only (``sent``: the instances' canonical JSON, when made already)."""
    kept = instances if sent is None else sent
    if info.manifest_data.get("store_inputs", "full") == "hash":
        return {
            "options": options,
            "instances_sha256": sha256_hex(canonical_json(kept)),
            "instance_count": len(instances),
        }
    return {"options": options, "instances": kept}


def warnings_of(explanation: Explanation) -> list[str]:
    """What a reader of the record must know about the inputs (for now: truncated texts)."""
    return warnings_for(explanation.results)


def warnings_for(results: list[dict[str, Any]]) -> list[str]:
    """``warnings_of`` an explanation with these results."""
    out = []
    for index, result in enumerate(results):
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
    remote: dict[str, Any] | None = None,
    results: orjson.Fragment | None = None,
) -> RecordDraft:
    """The record of one explanation (its id is the envelope's id), in the stored form
    (``model_store.record_format``): the envelope once, the parts many records share named by digest. A
    remote model's record also states its predictor (``remote_statement``) with ``remote`` (what it
    answered) added. ``results``: the explanation's results as ``results_json`` wrote them, when made."""
    statement = remote_statement(info)
    extra = {"remote": {**statement, **(remote or {})}} if statement is not None else {}
    sent = orjson.Fragment(canonical_json(instances))  # written once: the record's request and its hash
    envelope = explanation.to_dict()
    if results is not None:
        envelope["results"] = results
    content, parts = compact(
        {
            "model": {
                "name": info.name,
                "version": info.version,
                "artifact_sha256": info.artifact_sha256,
                "reference_sha256": info.reference_sha256,
            },
            "source": source or {"type": "api"},
            "request": recorded_request(info, instances, options, sent),
            "request_sha256": request_sha256(sent, options),
            "explanation": envelope,
            "service_version": service_version(),
            "warnings": warnings_of(explanation),
            **extra,
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


def results_json(explanation: Explanation) -> orjson.Fragment:
    """The explanation's results in the record's canonical JSON, written once for the record and the answer
    (its keys sorted: the same JSON value)."""
    return orjson.Fragment(canonical_json(explanation.results))


def keeps_weights(info: VersionInfo, setting: str) -> bool:
    """Whether attention records of this version keep the weights' bytes: the manifest's
    ``audit_attention`` when set, else the server's ``CANDOR_AUDIT_ATTENTION`` (``setting``)."""
    return (info.manifest_data.get("audit_attention") or setting) == "full"


def out_of_line(draft: RecordDraft, keep: bool) -> tuple[RecordDraft, list[Blob]]:
    """``draft`` with its arrays out of line: for methods that keep them so (``arrays_out_of_line``) every
    array of the explanation's results becomes a reference to a blob of its bytes (both to be stored in one
    transaction), or with ``keep`` false a digest-only reference (``"kept": false``) and no blob; other
    kinds are recorded whole."""
    if not spec(draft.kind).arrays_out_of_line:
        return draft, []
    envelope = draft.content["explanation"]
    encoding = draft.parts["params"].get("encoding", "json")
    results, blobs = array_codec.referenced(envelope["results"], encoding, keep)
    content = {**draft.content, "explanation": {**envelope, "results": results}}
    return dataclasses.replace(draft, content=content), blobs


def recorded_envelope(
    store: Store, record_id: str, recompute: Recompute | None = None
) -> dict[str, Any] | None:
    """The explanation a record holds, as its client received it (the same JSON value; keys may come in
    another order), or None when the record is gone (purged). Arrays kept as blobs are read back together,
    checked against their sha256 (a missing blob is a 404, a changed one a 409, as the record's plot
    answers); arrays kept by digest only are recomputed (``recompute``) and must match it bit for bit (else
    a 409). Encoded as the request asked."""
    try:
        record = store.audit.get(record_id)
    except NotFound:
        return None
    envelope: dict[str, Any] = record["explanation"]
    if not spec(record["kind"]).arrays_out_of_line:
        return envelope
    return array_codec.as_sent(with_recorded_arrays(store.sessions, record, recompute))


def with_recorded_arrays(
    sessions: sessionmaker[Session], record: dict[str, Any], recompute: Recompute | None
) -> Any:
    """The record's explanation with its references replaced by their arrays: kept blobs read in one session
    and checked against their sha256 (``NotFound`` when missing, ``Conflict`` when changed); digest-only
    ones from ``recompute(record)`` (called only when the record has one), each checked against its
    recorded sha256, dtype and shape (``Conflict`` when it differs or cannot be recomputed)."""
    explanation = record.get("explanation")
    kept = array_codec.kept_digests(explanation)
    stored = AuditBlobs(sessions).all_checked(kept)
    every_kept = kept == array_codec.digests(explanation)
    again = array_codec.arrays_at(recompute(record)) if recompute is not None and not every_kept else {}

    def array_for(ref: dict[str, Any], path: str) -> Any:
        if array_codec.is_kept(ref):
            return array_codec.array_of(ref, stored[ref[array_codec.REF_KEY]])
        return _matching(ref, again.get(path), path)

    return array_codec.references_replaced(explanation, array_for)


def _matching(ref: dict[str, Any], array: Any, path: str) -> Any:
    """The recomputed ``array`` for a digest-only reference, if it is the recorded one bit for bit."""
    if array is not None and array_codec.matches(ref, array):
        return array
    raise Conflict(
        f"The weights at {path} were recorded by digest only (audit_attention: digest) and recomputing "
        "them gives different values (another machine or library version?); the recorded values cannot be "
        "sent again. CANDOR_AUDIT_ATTENTION=full keeps the weights themselves."
    )

"""One explanation per input row: a chunk's multi-row Explanation split into its rows' records, and the
result line each row gets in the job's output."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson

from api.service.recording import draft_for, recorded_request, request_sha256, warnings_for
from explainers.envelope import Explanation, new_explanation_ids
from model_store.audit import canonical_json
from model_store.errors import CandorError
from model_store.stored_form import StoredRecord, leaf_hash_hex, stored_form
from model_store.versions import VersionInfo

INTERNAL_ERROR = {
    "status": 500,
    "title": "Internal error",
    "detail": "An unexpected error occurred; it has been logged.",
}


def ok_line(row: int, explanation_id: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"row": row, "status": "ok", "explanation_id": explanation_id, "result": result}


def error_line(row: int, error: BaseException) -> dict[str, Any]:
    """The row's error as a problem object; field paths of the row lose their ``instances.0.`` prefix."""
    if not isinstance(error, CandorError):
        return {"row": row, "status": "error", "error": dict(INTERNAL_ERROR)}
    problem: dict[str, Any] = {"status": error.status, "title": error.title, "detail": error.detail}
    if error.errors:
        problem["errors"] = {_unprefixed(k): v for k, v in error.errors.items()}
    return {"row": row, "status": "error", "error": problem}


def _unprefixed(field: str) -> str:
    for prefix in ("instances.0.", "instances.0"):
        if field.startswith(prefix):
            return field[len(prefix) :] or "row"
    return field


def job_source(job_id: str, row: int) -> dict[str, Any]:
    """What a job row's audit record says about where it came from."""
    return {"type": "job", "job_id": job_id, "row": row}


PER_ROW = frozenset({"source", "request", "request_sha256", "explanation", "warnings"})
"""The fields of a split chunk's records that differ from row to row; the others (and the parts the records
name) are serialised once."""
PER_ROW_ENVELOPE = frozenset({"id", "results", "quality"})


@dataclasses.dataclass(frozen=True)
class SplitRow:
    """One row of a split chunk: its explanation's id, its result, and its record as stored."""

    id: str
    result: dict[str, Any]
    record: StoredRecord


def split_records(
    kind: str,
    explanation: Explanation,
    row_quality: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    info: VersionInfo,
    instances: list[dict[str, Any]],
    options: dict[str, Any],
    key_id: str | None,
    job_id: str,
    first_row: int,
    now: dt.datetime,
) -> list[SplitRow]:
    """Each row of a row-independent chunk explanation as its own record, stored at ``now``: byte for byte
    ``stored_form(draft_for(...))`` of that row's own envelope (its own id, its result, the quality it
    alone gets), made without per-row envelopes or drafts. What the rows share (model, method, output,
    parts, times) is serialised once; each row writes its envelope, its request and its body."""
    first = dataclasses.replace(explanation, results=explanation.results[:1])
    template = draft_for(kind, first, info, instances[:1], options, key_id, job_source(job_id, first_row))
    shared = stored_form(template, now)  # the first row's record, but for its id: what the others share
    fixed = {
        key: orjson.Fragment(canonical_json(value))
        for key, value in orjson.loads(shared.body).items()
        if key not in PER_ROW and key != "id"
    }
    envelope = {
        key: orjson.Fragment(canonical_json(value))
        for key, value in template.content["explanation"].items()
        if key not in PER_ROW_ENVELOPE
    }
    rows = []
    ids = new_explanation_ids(len(instances))
    for offset, (row_id, result, instance) in enumerate(
        zip(ids, explanation.results, instances, strict=True)
    ):
        quality = row_quality(explanation.quality, result)
        sent = orjson.Fragment(canonical_json([instance]))
        request = recorded_request(info, [instance], options, sent)
        del request["options"]  # in the shared part
        body = canonical_json(
            {
                **fixed,
                "id": row_id,
                "explanation": {
                    **envelope,
                    "id": row_id,
                    "results": [result],
                    "quality": {k: v for k, v in quality.items() if k not in template.parts},
                },
                "request": request,
                "request_sha256": request_sha256(sent, options),
                "source": job_source(job_id, first_row + offset),
                "warnings": warnings_for([result]),
            }
        )
        leaf = leaf_hash_hex(body)
        record_row = {**shared.row, "id": row_id, "hash": leaf, "leaf_hash": leaf}
        rows.append(SplitRow(row_id, result, StoredRecord(body, leaf, record_row, shared.parts)))
    return rows

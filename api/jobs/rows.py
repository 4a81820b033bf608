"""One explanation per input row: a chunk's multi-row Explanation split into per-row envelopes, and the
result line each row gets in the job's output."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import orjson

from api.service.recording import draft_for, recorded_request, request_sha256, warnings_of
from explainers.envelope import Explanation, new_explanation_id
from model_store.audit import RecordDraft, canonical_json, serialised
from model_store.errors import CandorError
from model_store.versions import VersionInfo

INTERNAL_ERROR = {
    "status": 500,
    "title": "Internal error",
    "detail": "An unexpected error occurred; it has been logged.",
}


def split(
    explanation: Explanation, row_quality: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]
) -> list[Explanation]:
    """Per-row envelopes of a row-independent explanation: each its own id, ``results=[results[i]]`` and the
    quality figures that row alone gets (the method's ``row_quality``)."""
    return [
        dataclasses.replace(
            explanation,
            id=new_explanation_id(),
            results=[result],
            quality=row_quality(explanation.quality, result),
        )
        for result in explanation.results
    ]


def ok_line(row: int, explanation: Explanation) -> dict[str, Any]:
    return {"row": row, "status": "ok", "explanation_id": explanation.id, "result": explanation.results[0]}


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


def split_drafts(
    kind: str,
    rows: list[Explanation],
    info: VersionInfo,
    instances: list[dict[str, Any]],
    options: dict[str, Any],
    key_id: str | None,
    job_id: str,
    first_row: int,
) -> list[RecordDraft]:
    """``draft_for`` of each row of one split explanation, already serialised (``audit.serialised``), with
    what the rows share (model, method, output, times) serialised once: the same records at a fraction of
    the cost, computed on the worker so the runner only frames and hashes them."""
    template = draft_for(kind, rows[0], info, [instances[0]], options, key_id, job_source(job_id, first_row))
    shared = serialised({k: v for k, v in template.content.items() if k not in PER_ROW})
    parts = serialised(template.parts)
    envelope = {
        k: orjson.Fragment(canonical_json(v))
        for k, v in template.content["explanation"].items()
        if k not in PER_ROW_ENVELOPE
    }
    drafts = []
    for offset, (explanation, instance) in enumerate(zip(rows, instances, strict=True)):
        row_envelope = {
            **envelope,
            "id": explanation.id,
            "results": explanation.results,
            "quality": {k: v for k, v in explanation.quality.items() if k not in template.parts},
        }
        request = recorded_request(info, [instance], options)
        request.pop("options")  # in the shared part
        content = {
            **shared,
            "source": canonical_json(job_source(job_id, first_row + offset)),
            "request": canonical_json(request),
            "request_sha256": canonical_json(request_sha256([instance], options)),
            "explanation": canonical_json(row_envelope),
            "warnings": canonical_json(warnings_of(explanation)),
        }
        drafts.append(dataclasses.replace(template, id=explanation.id, content=content, parts=parts))
    return drafts

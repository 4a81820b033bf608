"""Batch jobs over HTTP: submit (multipart file or a stored dataset), follow, fetch results, cancel.

Every route needs ``explain``; a key sees only the jobs it submitted unless it has ``admin`` (another key's
job is a 404, as if it did not exist), and only jobs of the models its allowlist names (the others are a
404 too)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from flask import Response, request, send_file, stream_with_context, url_for
from flask.views import MethodView

from api.http.auth import caller_key_id, caller_models, current_principal
from api.http.context import candor
from api.http.jsonio import json_response
from api.http.schemas.jobs import JobDatasetRequestSchema, JobFormSchema, JobResultQuerySchema, JobSchema
from api.http.schemas.uploads import JobFilesSchema, JobMultipartSchema
from api.http.streaming import guarded, jsonl_trailer
from api.http.v1.blueprint import Blueprint
from api.jobs.service import Caller, progress, summary_of
from api.jobs.submit import JobRequest
from api.schemas.common import ProblemSchema
from api.service.idempotency import REPLAYED_HEADER, header_parameter, replayed_header
from api.service.idempotency import idempotency_key as idempotency_key_sent
from model_store.errors import InvalidInput, ModelNotFound

blp = Blueprint("jobs", __name__, url_prefix="/v1/jobs", description="Batch explanation jobs")
MULTIPART = "multipart/form-data"


def _caller() -> Caller:
    """Which jobs the caller sees: its own (every key's with ``admin``), of the models it may see."""
    principal = current_principal()
    return Caller(
        key_id=caller_key_id(),
        admin=bool(principal and "admin" in principal.scopes),
        models=caller_models(),
    )


def describe(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the API shows it."""
    started, finished = job["started_at"], job["finished_at"]
    elapsed = None
    if started is not None:
        elapsed = ((finished or dt.datetime.now(dt.UTC)) - started).total_seconds()
    summary = job["summary"] or {}
    return {
        "id": job["id"],
        "status": job["status"],
        "kind": job["kind"],
        "model": {"name": job["model_name"], "version": job["model_version"]},
        "options": job["options"],
        "source": job["source"],
        "progress": progress(job),
        "timing": {
            "created_at": job["created_at"],
            "started_at": started,
            "finished_at": finished,
            "elapsed_s": elapsed,
        },
        "attempts": job["attempts"],
        "error": job["error"],
        "explanation": summary.get("explanation"),
        "summary": summary_of(job),
        "links": {
            "self": url_for("jobs.Job", job_id=job["id"]),
            "result": url_for("jobs.JobResult", job_id=job["id"]),
        },
    }


@blp.route("")
class Jobs(MethodView):
    required_scope = "explain"

    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                MULTIPART: {"schema": JobMultipartSchema},
                "application/json": {"schema": JobDatasetRequestSchema},
            },
        },
        parameters=[
            header_parameter(
                "Makes a retry safe: the same key sent again with the same request (fields and file bytes) "
                "answers with the job it queued first, instead of queueing another; with a different "
                "request, 422. Remembered per API key for as long as the job exists."
            )
        ],
    )
    @blp.response(
        202,
        JobSchema,
        headers={
            "Location": {"schema": {"type": "string"}},
            **replayed_header("the job queued"),
        },
    )
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(413, schema=ProblemSchema)
    @blp.alt_response(415, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def post(self):  # type: ignore[no-untyped-def]
        """Queue a job: every row of a CSV or Parquet file (multipart: model, version, kind, options as JSON
        text, file), or of a stored dataset (JSON: model, version, kind, options, dataset), explained as
        ``POST .../explain/<kind>`` would explain it. Answers 202 with the job and its ``Location``; with an
        ``Idempotency-Key`` already used for the same request, the job queued then."""
        parser = blp.ARGUMENTS_PARSER
        idempotency_key = idempotency_key_sent(request.headers)
        if request.mimetype == MULTIPART:
            form = parser.parse(JobFormSchema(), request, location="form")
            files = parser.parse(JobFilesSchema(), request, location="files")
            upload = files["file"]
            _check_model_visible(form["model"])
            job_request = JobRequest(
                form["model"],
                form["version"],
                form["kind"],
                _options_text(form["options"]),
                upload=upload.stream,
                filename=upload.filename,
            )
        else:
            body = parser.parse(JobDatasetRequestSchema(), request, location="json")
            _check_model_visible(body["model"])
            job_request = JobRequest(
                body["model"], body["version"], body["kind"], body["options"], dataset=body["dataset"]
            )
        job, replayed = candor().jobs.submit(job_request, caller_key_id(), idempotency_key)
        headers = {"Location": url_for("jobs.Job", job_id=job["id"])}
        if replayed:
            headers[REPLAYED_HEADER] = "true"
        return json_response(describe(job), status=202, headers=headers)


def _check_model_visible(name: str) -> None:
    """A key limited to some models cannot explain the others (404, as if they did not exist)."""
    principal = current_principal()
    if principal is not None and not principal.sees(name):
        raise ModelNotFound(name)


def _options_text(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput.field("options", "Not valid JSON (NaN and Infinity are not JSON).") from exc


@blp.route("/<job_id>")
class Job(MethodView):
    required_scope = "explain"

    @blp.response(200, JobSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, job_id: str):  # type: ignore[no-untyped-def]
        """Status, progress (rows done of total), timing, errors and the summary so far."""
        return json_response(describe(candor().jobs.get(job_id, _caller())))

    @blp.response(202, JobSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    def delete(self, job_id: str):  # type: ignore[no-untyped-def]
        """Cancel a queued or running job (a running one stops before its next chunk; the rows done keep
        their audit records). Cancelling a cancelled job is a no-op; a finished one is a 409."""
        return json_response(describe(candor().jobs.cancel(job_id, _caller())), status=202)


@blp.route("/<job_id>/result")
class JobResult(MethodView):
    required_scope = "explain"

    @blp.arguments(JobResultQuerySchema, location="query")
    @blp.response(
        200,
        description="One JSON line per input row, in input order: {row, status: ok, explanation_id, "
        "result} or {row, status: error, error} (a failure once the stream has begun ends it with a line "
        '{"error": <problem document>}); with format=parquet, a Parquet file with the '
        "columns row, status, explanation_id, result (JSON text) and error (JSON text).",
        content_type="application/x-ndjson",
    )
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any], job_id: str):  # type: ignore[no-untyped-def]
        """The results, streamed (409 until the job has succeeded)."""
        jobs, name = candor().jobs, f"job-{job_id}"
        if query["format"] == "parquet":
            path = jobs.result_parquet(job_id, _caller())
            return send_file(path, mimetype="application/vnd.apache.parquet", download_name=f"{name}.parquet")
        return Response(
            stream_with_context(guarded(jobs.result_lines(job_id, _caller()), jsonl_trailer)),
            mimetype="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{name}.jsonl"'},
        )

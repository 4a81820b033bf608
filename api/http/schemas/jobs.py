"""Schemas for batch jobs: submission (multipart with a file, or JSON naming a stored dataset) and the job."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.jobs.submit import DATASETS
from api.methods.registry import NAMES as KINDS
from api.schemas.common import (
    MAX_FORM_CHARS,
    MAX_OPTIONS,
    MODEL_NAME,
    VERSION_PATTERN,
    BoundedDict,
    FullMatch,
    StrictSchema,
    text,
)
from model_store.jobs import STATUSES

MODEL = text(64, required=True, validate=FullMatch(MODEL_NAME), metadata={"description": "Model name"})
VERSION = text(
    10,
    validate=FullMatch(VERSION_PATTERN),
    load_default="production",
    metadata={"description": "A number, latest or production (default)"},
)
KIND = fields.String(
    required=True,
    validate=validate.OneOf(KINDS),
    metadata={"description": "The explanation each row gets, as from POST .../explain/<kind>"},
)
OPTIONS_DESCRIPTION = (
    "The options of POST .../explain/<kind> (everything but instances), checked at submission"
)


class JobFormSchema(StrictSchema):
    """multipart/form-data fields (with ``file``)."""

    model = MODEL
    version = VERSION
    kind = KIND
    options = text(
        MAX_FORM_CHARS, load_default="{}", metadata={"description": OPTIONS_DESCRIPTION + ", as JSON text"}
    )


class JobDatasetRequestSchema(StrictSchema):
    """application/json: explain a dataset the service stores."""

    model = MODEL
    version = VERSION
    kind = KIND
    options = BoundedDict(MAX_OPTIONS, load_default=dict, metadata={"description": OPTIONS_DESCRIPTION})
    dataset = fields.String(
        required=True,
        validate=validate.OneOf(DATASETS),
        metadata={"description": "reference: the version's reference (background) rows"},
    )


class JobResultQuerySchema(StrictSchema):
    format = fields.String(
        load_default="jsonl",
        validate=validate.OneOf(["jsonl", "parquet"]),
        metadata={"description": "jsonl (default) or parquet"},
    )


class JobProgressSchema(Schema):
    rows_done = fields.Integer(required=True)
    rows_total = fields.Integer(required=True)
    chunks_done = fields.Integer(required=True)
    chunks_total = fields.Integer(required=True)
    chunk_rows = fields.Integer(required=True)
    errors = fields.Integer(required=True, metadata={"description": "Rows whose line is an error"})


class JobTimingSchema(Schema):
    created_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True, required=True)
    finished_at = fields.DateTime(allow_none=True, required=True)
    elapsed_s = fields.Float(
        allow_none=True, required=True, metadata={"description": "From start to finish (or to now)"}
    )


class JobModelSchema(Schema):
    name = fields.String(required=True)
    version = fields.Integer(required=True, metadata={"description": "Resolved at submission"})


class JobSchema(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    kind = fields.String(required=True)
    model = fields.Nested(JobModelSchema, required=True)
    options = fields.Dict(required=True)
    source = fields.Dict(required=True, metadata={"description": "upload (filename) or dataset (name)"})
    progress = fields.Nested(JobProgressSchema, required=True)
    timing = fields.Nested(JobTimingSchema, required=True)
    attempts = fields.Integer(required=True, metadata={"description": "Runners that took the job"})
    error = fields.String(allow_none=True, required=True, metadata={"description": "Why the job failed"})
    explanation = fields.Dict(
        allow_none=True,
        required=True,
        metadata={"description": "kind, method and output shared by every row's explanation"},
    )
    summary = fields.Dict(
        required=True,
        metadata={
            "description": "Global figures over the rows done so far: rows_ok, rows_error, label_counts; "
            "shap: mean_abs_attribution per feature; counterfactuals: status_counts, recourse_share; "
            "reasons: declined_share, reason_counts; text: truncated, mean_tokens"
        },
    )
    links = fields.Dict(keys=fields.String(), values=fields.String(), required=True)

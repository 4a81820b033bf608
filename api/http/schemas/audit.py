"""Schemas for explanation records, the audit log's proofs and verifier, and replays."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.methods.registry import NAMES
from api.schemas.common import MAX_INT32, BoundedDateTime, StrictSchema, integer
from api.schemas.models import capped_by

RECORD_KINDS = (*NAMES, "checkpoint")


class RecordQuerySchema(StrictSchema):
    model = fields.String(validate=validate.Length(min=1, max=64))
    version = integer(1, MAX_INT32, strict=False)
    kind = fields.String(validate=validate.OneOf(RECORD_KINDS))
    since = BoundedDateTime(metadata={"description": "Recorded at or after."})
    until = BoundedDateTime(metadata={"description": "Recorded before."})


class RecordPageQuerySchema(RecordQuerySchema):
    cursor = fields.String(
        validate=validate.Length(max=64), metadata={"description": "``next_cursor`` of the previous page."}
    )
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class RecordExportQuerySchema(RecordQuerySchema):
    format = fields.String(load_default="jsonl", validate=validate.OneOf(("jsonl", "csv")))


class RecordModelSchema(Schema):
    name = fields.String(allow_none=True)
    version = fields.Integer(allow_none=True)


MAX_TREE_SIZE = 2**53


class ProofQuerySchema(StrictSchema):
    tree_size = integer(
        1, MAX_TREE_SIZE, metadata={"description": "The tree size to prove against (a checkpoint's size)."}
    )


class ConsistencyQuerySchema(StrictSchema):
    from_ = integer(
        1, MAX_TREE_SIZE, required=True, data_key="from", metadata={"description": "The older size."}
    )
    to = integer(
        1, MAX_TREE_SIZE, metadata={"description": "The newer size (default: the latest checkpoint's)."}
    )


class ProofSchema(Schema):
    leaf_index = fields.Integer(required=True)
    tree_size = fields.Integer(required=True)
    leaf_hash = fields.String(required=True, metadata={"description": "base64"})
    inclusion_path = fields.List(fields.String(), required=True, metadata={"description": "base64 hashes"})
    checkpoint = fields.String(
        allow_none=True, required=True, metadata={"description": "The signed checkpoint of tree_size."}
    )


class ConsistencySchema(Schema):
    from_ = fields.Integer(required=True, data_key="from")
    to = fields.Integer(required=True)
    consistency_path = fields.List(fields.String(), required=True, metadata={"description": "base64 hashes"})
    checkpoint = fields.String(
        allow_none=True, required=True, metadata={"description": "The signed checkpoint of to."}
    )


class RecordSummarySchema(Schema):
    id = fields.String(required=True)
    seq = fields.Integer(required=True)
    leaf_index = fields.Integer(
        allow_none=True, metadata={"description": "Its place in the log's tree (null until integrated)."}
    )
    recorded_at = fields.DateTime(required=True)
    kind = fields.String(required=True)
    model = fields.Nested(RecordModelSchema, required=True)
    key_id = fields.String(allow_none=True)
    status = fields.String(required=True)
    hash = fields.String(required=True)


class RecordPageSchema(Schema):
    items = fields.List(fields.Nested(RecordSummarySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class RecordSchema(Schema):
    """A record as its client and auditors read it (a version 2 record expanded with the parts it names)."""

    id = fields.String(required=True)
    seq = fields.Integer(required=True)
    leaf_index = fields.Integer(allow_none=True)
    prev_hash = fields.String(metadata={"description": "Version 1 records only: the chain's link."})
    hash = fields.String(
        required=True,
        metadata={"description": "Version 2: the leaf hash (hex); version 1: the sha256 of its body."},
    )
    recorded_at = fields.String(required=True)
    kind = fields.String(required=True)
    model_name = fields.String(allow_none=True)
    model_version = fields.Integer(allow_none=True)
    key_id = fields.String(allow_none=True)
    status = fields.String(required=True)
    record_schema_version = fields.String()
    model = fields.Dict(metadata={"description": "name, version, artifact_sha256, reference_sha256"})
    source = fields.Dict(
        metadata={"description": '{"type": "api"} or {"type": "job", "job_id": ..., "row": ...}'}
    )
    request = fields.Dict(
        metadata={"description": "options and instances, or (store_inputs: hash) instances_sha256"}
    )
    request_sha256 = fields.String()
    explanation = fields.Dict(
        metadata={
            "description": "The explanation envelope as returned; attention weights arrays are kept out of "
            'line, each replaced by {"blob_sha256", "dtype", "shape", "byte_order", "bytes", "encoding"}: '
            "GET /v1/explanations/{id}/blobs/{digest} (digest = blob_sha256) returns its bytes."
        }
    )
    method = fields.Dict()
    params = fields.Dict()
    seed = fields.Integer(allow_none=True)
    reference_sha256 = fields.String()
    quality = fields.Dict()
    library_versions = fields.Dict(keys=fields.String(), values=fields.String())
    service_version = fields.String()
    warnings = fields.List(fields.String())
    remote = fields.Dict(
        metadata={
            "description": "Remote models (format: remote) only: the predictor's protocol, endpoint name and "
            "remote model (never its URL or credentials); over the API also requests (how many the "
            "computation sent) and answered (the predictor's predictions for the explained rows)"
        }
    )
    purged = fields.Dict(
        metadata={"description": "Version 1 checkpoint records: the purged range and its last hash."}
    )


class ChainBreakSchema(Schema):
    leaf_index = fields.Integer(allow_none=True)
    seq = fields.Integer(allow_none=True, required=True)
    id = fields.String(allow_none=True, required=True)
    reason = fields.String(required=True)


class LogHeadSchema(Schema):
    tree_size = fields.Integer(required=True)
    root = fields.String(required=True, metadata={"description": "hex"})


class BlobsVerifySchema(Schema):
    checked = fields.Integer(required=True, metadata={"description": "Blob references checked."})
    distinct = fields.Integer(required=True, metadata={"description": "Distinct blobs hashed."})
    digest_only = fields.Integer(
        metadata={
            "description": "References kept by digest only (audit_attention: digest): no blob to check; "
            "the leaf hash covers their sha256."
        }
    )
    first_break = fields.Nested(ChainBreakSchema, allow_none=True, required=True)


class VerifySchema(Schema):
    ok = fields.Boolean(required=True)
    checked = fields.Integer(required=True)
    first_break = fields.Nested(
        ChainBreakSchema,
        allow_none=True,
        required=True,
        metadata={"description": "The log's first break, else the first record whose blob fails."},
    )
    blobs = fields.Nested(
        BlobsVerifySchema,
        required=True,
        metadata={"description": "Every blob a record refers to exists and hashes to its sha256."},
    )
    head = fields.Nested(LogHeadSchema, required=True, metadata={"description": "The tree as integrated."})
    checkpoint = fields.Nested(
        LogHeadSchema,
        allow_none=True,
        required=True,
        metadata={"description": "The latest signed checkpoint checked (GET /v1/audit/checkpoint)."},
    )


class ReplayRequestSchema(StrictSchema):
    instances = fields.List(
        fields.Raw(),
        **capped_by(
            "max_instances",
            validate=validate.Length(min=1),
            metadata={"description": "Only for records that kept the inputs' sha256 only."},
        ),
    )


class ByDigestSchema(Schema):
    compared = fields.Integer(required=True, metadata={"description": "Arrays compared by sha256."})
    differing = fields.List(
        fields.String(), required=True, metadata={"description": "Paths whose recomputed sha256 differs."}
    )


class ReplaySchema(Schema):
    id = fields.String(required=True)
    kind = fields.String(required=True)
    model = fields.Dict(required=True)
    seed = fields.Integer(allow_none=True)
    identical = fields.Boolean(
        required=True,
        metadata={"description": "Every recorded field reproduced exactly (paths in not_recorded aside)."},
    )
    max_abs_diff = fields.Float(required=True)
    tolerance = fields.Float(required=True)
    within_tolerance = fields.Boolean(required=True)
    differences = fields.List(
        fields.String(), required=True, metadata={"description": "Paths whose structure or text differ."}
    )
    not_recorded = fields.List(
        fields.String(),
        required=True,
        metadata={
            "description": "Paths only the replay has: fields added since the record was made (for example "
            "OOD flags), left out of the comparison."
        },
    )
    by_digest = fields.Nested(
        ByDigestSchema,
        metadata={
            "description": "Only for records that kept attention weights by digest only (audit_attention: "
            "digest): those arrays are compared bit for bit by sha256, dtype and shape. A differing one is "
            "listed in differences too; how far it is cannot be measured (max_abs_diff covers the other "
            "values), so within_tolerance is false."
        },
    )

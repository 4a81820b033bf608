"""Schemas shared by several resources."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class ProblemSchema(Schema):
    """RFC 9457 problem document."""

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    instance = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per field path, e.g. instances.0.age_in_years"},
    )
    request_id = fields.String(
        required=True,
        metadata={
            "description": "The request's id, also sent as the X-Request-ID header; quote it in reports"
        },
    )


class ModelRefSchema(Schema):
    name = fields.String(required=True)
    version = fields.Integer(required=True)
    sha256 = fields.String(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)
    database = fields.String()

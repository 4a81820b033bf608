"""Schemas for API key administration."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas.common import StrictSchema
from model_store.keys import MODEL, NAME, SCOPES


class KeyCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Regexp(NAME.pattern + "$"))
    scopes = fields.List(
        fields.String(validate=validate.OneOf(SCOPES)), required=True, validate=validate.Length(min=1)
    )
    models = fields.List(
        fields.String(validate=validate.Regexp(MODEL.pattern + "$")),
        validate=validate.Length(min=1, max=1000),
        metadata={
            "description": "Only these models are visible to the key (others answer 404); omit for all."
        },
    )


class KeySchema(Schema):
    key_id = fields.String(required=True)
    name = fields.String(required=True)
    scopes = fields.List(fields.String(), required=True)
    models = fields.List(fields.String(), allow_none=True, required=True)
    created_at = fields.DateTime(required=True)
    rotated_at = fields.DateTime(allow_none=True, required=True)
    revoked = fields.Boolean(required=True)


class KeyListSchema(Schema):
    keys = fields.List(fields.Nested(KeySchema), required=True)


class NewKeySchema(KeySchema):
    key = fields.String(required=True, metadata={"description": "The secret token, shown this once only."})

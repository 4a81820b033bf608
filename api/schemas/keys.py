"""Schemas for API key administration."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas.common import FullMatch, StrictSchema, UniqueList, text
from model_store.keys import MODEL, NAME, SCOPES

MAX_KEY_MODELS = 1000


class KeyCreateSchema(StrictSchema):
    name = text(64, required=True, validate=FullMatch(NAME.pattern))
    scopes = UniqueList(
        fields.String(validate=validate.OneOf(SCOPES)), len(SCOPES), min_items=1, required=True
    )
    models = UniqueList(
        text(64, validate=FullMatch(MODEL.pattern)),
        MAX_KEY_MODELS,
        min_items=1,
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

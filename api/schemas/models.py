"""Schemas for models, versions, registration and predictions."""

from __future__ import annotations

from typing import Any

from flask_smorest.fields import Upload
from marshmallow import fields, validate

from api.schemas.common import ModelRefSchema, StrictSchema


class ModelSummarySchema(StrictSchema):
    name = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    latest_version = fields.Integer(allow_none=True)
    production_version = fields.Integer(allow_none=True)


class ModelListSchema(StrictSchema):
    models = fields.List(fields.Nested(ModelSummarySchema), required=True)


class VersionSummarySchema(StrictSchema):
    version = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    artifact_sha256 = fields.String(required=True)
    stages = fields.List(fields.String(), required=True)


class ModelDetailSchema(ModelSummarySchema):
    versions = fields.List(fields.Nested(VersionSummarySchema), required=True)
    ready = fields.Boolean(
        required=True,
        metadata={"description": "The serving version (production, else latest) loads (KServe V1 readiness)"},
    )


class VersionDetailSchema(StrictSchema):
    name = fields.String(required=True)
    version = fields.Integer(required=True)
    flavour = fields.String(required=True)
    stages = fields.List(fields.String(), required=True)
    artifact_sha256 = fields.String(required=True)
    reference_sha256 = fields.String(required=True)
    created_at = fields.DateTime(required=True)
    manifest = fields.Dict(required=True, metadata={"description": "The completed manifest"})
    methods = fields.List(
        fields.String(), required=True, metadata={"description": "Explanation methods that apply"}
    )
    feature_order = fields.List(fields.String(), required=True)


class RegisterFormSchema(StrictSchema):
    manifest = fields.String(required=True, metadata={"description": "The manifest as JSON or YAML text"})


class RegisterFilesSchema(StrictSchema):
    artifact = Upload(
        required=True,
        metadata={
            "description": "Tabular: the estimator or Pipeline saved with skops. Text: a zip or tar(.gz) "
            "of the model directory (config.json, safetensors weights, tokenizer files)"
        },
    )
    reference = Upload(
        metadata={"description": "Reference (background) rows, Parquet or CSV (tabular models)"}
    )


class ObjectRows(fields.List):
    """A list of JSON objects, checked in bulk; their contents are validated against the manifest later."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Dict(), **kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list) and all(type(row) is dict for row in value):
            return value
        return super()._deserialize(value, attr, data, **kwargs)  # per-item messages


class InstancesSchema(StrictSchema):
    instances = ObjectRows(
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "Rows as {feature: value} objects"},
    )


class PredictionSchema(StrictSchema):
    label = fields.String()
    probabilities = fields.Dict(keys=fields.String(), values=fields.Float())
    value = fields.Float()
    truncated = fields.Boolean(metadata={"description": "Text models: present (true) when the text was cut"})
    original_tokens = fields.Integer(metadata={"description": "Text models: tokens before truncation"})


class PredictResponseSchema(StrictSchema):
    model = fields.Nested(ModelRefSchema, required=True)
    predictions = fields.List(fields.Nested(PredictionSchema), required=True)


class KServeRequestSchema(StrictSchema):
    instances = fields.List(
        fields.Raw(),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "Rows as objects or as arrays in the manifest's feature order"},
    )


class KServePredictResponseSchema(StrictSchema):
    predictions = fields.List(
        fields.Raw(), required=True, metadata={"description": "Predicted label (or value) per instance"}
    )
    probabilities = fields.List(fields.Dict(keys=fields.String(), values=fields.Float()))
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)

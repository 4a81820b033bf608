"""Schemas for models, versions, registration and predictions."""

from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from api.schemas.common import MAX_FEATURES, MAX_FORM_CHARS, BoundedDict, ModelRefSchema, StrictSchema, text

CAP_KEY = "x-candor-max-items"
"""Where a list of rows names the setting that caps it; the contract publishes the setting's value as
``maxItems`` (``api.http.openapi_contract``) and the service refuses more rows with a 422 naming
``instances``."""


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
    format = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "How a tabular model is stored: skops, xgboost, lightgbm, onnx or remote"},
    )
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
    manifest = text(
        MAX_FORM_CHARS, required=True, metadata={"description": "The manifest as JSON or YAML text"}
    )


def capped_by(setting: str, **kwargs: Any) -> dict[str, Any]:
    """``metadata`` of a list of rows capped by the setting ``setting`` (e.g. ``max_instances``)."""
    metadata = kwargs.pop("metadata", {})
    return {**kwargs, "metadata": {**metadata, CAP_KEY: setting}}


class ObjectRows(fields.List):
    """A list of JSON objects of at most ``MAX_FEATURES`` keys each, checked in bulk; their contents are
    validated against the manifest later, their count by the service (``cap``: the setting)."""

    def __init__(self, cap: str = "max_instances", **kwargs: Any) -> None:
        super().__init__(BoundedDict(MAX_FEATURES), **capped_by(cap, **kwargs))

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, list) and all(type(row) is dict and len(row) <= MAX_FEATURES for row in value):
            return value
        return super()._deserialize(value, attr, data, **kwargs)  # per-item messages


class InstancesSchema(StrictSchema):
    instances = ObjectRows(
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "Rows as {feature: value} objects"},
    )


class RecourseInstancesSchema(InstancesSchema):
    instances = ObjectRows(
        "max_cf_instances",
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "Rows as {feature: value} objects"},
    )


class TextRowsSchema(InstancesSchema):
    instances = ObjectRows(
        "max_text_instances",
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": 'Texts as {"text": ...} objects'},
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
        **capped_by(
            "max_instances",
            required=True,
            validate=validate.Length(min=1),
            metadata={"description": "Rows as objects or as arrays in the manifest's feature order"},
        ),
    )


class KServePredictResponseSchema(StrictSchema):
    predictions = fields.List(
        fields.Raw(), required=True, metadata={"description": "Predicted label (or value) per instance"}
    )
    probabilities = fields.List(fields.Dict(keys=fields.String(), values=fields.Float()))
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)

"""Schemas for explanation requests and the Explanation envelope."""

from __future__ import annotations

from marshmallow import fields, validate

from api.schemas.common import MAX_LABEL, ModelRefSchema, StrictSchema, text
from api.schemas.models import InstancesSchema, PredictionSchema
from api.schemas.understanding import OodFlagSchema


class ShapOptionsSchema(StrictSchema):
    """Options left out fall back to the manifest's ``defaults.shap``, then to the service's defaults."""

    algorithm = fields.String(
        validate=validate.OneOf(["auto", "tree", "linear", "permutation", "kernel"]),
        metadata={"description": "Default: auto (tree, else linear, else permutation)"},
    )
    output = fields.String(
        allow_none=True,
        validate=validate.OneOf(["probability", "log_odds", "raw"]),
        metadata={"description": "Default: the model's margin for tree/linear, else probability"},
    )
    target = text(
        MAX_LABEL,
        allow_none=True,
        metadata={"description": "Class label; default favourable (binary) or predicted class"},
    )
    top_k = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=10_000))
    seed = fields.Integer(
        strict=True, validate=validate.Range(min=0, max=2**32 - 1), metadata={"description": "Default: 0"}
    )
    max_evals = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=1_000_000),
        metadata={"description": "Model evaluations per row (permutation, kernel); default 512"},
    )
    background_rows = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=1, max=1_000_000),
        metadata={"description": "Reference rows used as background; default 100"},
    )
    layout = fields.String(
        validate=validate.OneOf(["records", "columnar"]),
        metadata={
            "description": "Default records: sorted [{feature, value, attribution}] per row; columnar: "
            "attribution_values per row in output.feature_order and group_attribution_values in "
            "output.groups (compact, for bulk calls)"
        },
    )


class ShapRequestSchema(InstancesSchema, ShapOptionsSchema):
    pass


class AttributionSchema(StrictSchema):
    feature = fields.String(required=True)
    value = fields.Raw(required=True, metadata={"description": "The instance's raw value"})
    attribution = fields.Float(required=True)


class GroupAttributionSchema(StrictSchema):
    group = fields.String(required=True)
    features = fields.List(fields.String(), required=True)
    attribution = fields.Float(required=True)


class AttributionResultSchema(StrictSchema):
    prediction = fields.Nested(PredictionSchema, required=True)
    target = fields.String(allow_none=True, required=True)
    output_value = fields.Float(required=True, metadata={"description": "Model output in output.space"})
    base_value = fields.Float(required=True)
    attributions = fields.List(fields.Nested(AttributionSchema), metadata={"description": "records layout"})
    attribution_values = fields.List(
        fields.Float(),
        metadata={"description": "columnar layout: one value per feature in output.feature_order"},
    )
    other_attribution = fields.Float(metadata={"description": "Sum of attributions beyond top_k"})
    additivity_residual = fields.Float(required=True)
    groups = fields.List(fields.Nested(GroupAttributionSchema), metadata={"description": "records layout"})
    group_attribution_values = fields.List(
        fields.Float(),
        metadata={"description": "columnar layout: one sum per group in output.groups"},
    )
    ood = fields.Nested(OodFlagSchema, metadata={"description": "Out-of-distribution flags of the instance"})
    summary = fields.String(metadata={"description": "Plain-language summary (?narrative=true)"})


class MethodSchema(StrictSchema):
    name = fields.String(required=True)
    algorithm = fields.String(required=True)
    params = fields.Dict(required=True)
    library_versions = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class FeatureGroupSchema(StrictSchema):
    group = fields.String(required=True)
    features = fields.List(fields.String(), required=True)


class OutputSchema(StrictSchema):
    space = fields.String(required=True, validate=validate.OneOf(["probability", "log_odds", "raw"]))
    target = fields.String(allow_none=True, required=True)
    target_rule = fields.String(required=True)
    feature_order = fields.List(fields.String(), metadata={"description": "columnar layout only"})
    groups = fields.List(
        fields.Nested(FeatureGroupSchema),
        metadata={"description": "columnar layout, when the manifest declares groups: their order, members"},
    )


class ExplanationSchema(StrictSchema):
    id = fields.String(required=True)
    schema_version = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["attribution"]))
    created_at = fields.DateTime(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    method = fields.Nested(MethodSchema, required=True)
    output = fields.Nested(OutputSchema, required=True)
    results = fields.List(fields.Nested(AttributionResultSchema), required=True)
    quality = fields.Dict(required=True)
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)


class FeatureImportanceSchema(StrictSchema):
    feature = fields.String(required=True)
    importance = fields.Float(required=True)
    per_class = fields.Dict(keys=fields.String(), values=fields.Float(), allow_none=True)


class ImportanceSchema(StrictSchema):
    kind = fields.String(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    cached = fields.Boolean(required=True)
    method = fields.Dict(required=True)
    output = fields.Dict(required=True)
    features = fields.List(fields.Nested(FeatureImportanceSchema), required=True)
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)

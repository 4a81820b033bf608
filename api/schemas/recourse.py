"""Schemas for counterfactual recourse and adverse-action reasons."""

from __future__ import annotations

from marshmallow import fields, validate

from api.schemas.common import (
    MAX_CATEGORIES,
    MAX_FEATURE_NAME,
    MAX_FEATURES,
    MAX_LABEL,
    BoundedDict,
    BoundedList,
    JsonBoolean,
    ModelRefSchema,
    StrictSchema,
    UniqueList,
    text,
)
from api.schemas.explain import MethodSchema
from api.schemas.models import PredictionSchema, RecourseInstancesSchema
from api.schemas.understanding import OodFlagSchema

BUDGET = validate.Range(min=10, max=600_000)


class CounterfactualOptionsSchema(StrictSchema):
    """Options left out fall back to the manifest's ``defaults.counterfactuals``, then to the service's."""

    total_cfs = fields.Integer(
        strict=True, validate=validate.Range(min=1, max=20), metadata={"description": "Default 4"}
    )
    desired_class = text(
        MAX_LABEL,
        metadata={"description": "Class label to reach; default: the favourable class of a binary model"},
    )
    desired_range = fields.List(
        fields.Float(allow_nan=False),
        validate=validate.Length(equal=2),
        metadata={"description": "[low, high] the predicted value must reach (regression only)"},
    )
    features_to_vary = UniqueList(
        text(MAX_FEATURE_NAME),
        MAX_FEATURES,
        min_items=1,
        metadata={"description": "Default: every mutable, non-protected feature (each named once)"},
    )
    permitted_range = BoundedDict(
        MAX_FEATURES,
        keys=text(MAX_FEATURE_NAME),
        values=BoundedList(fields.Raw(), MAX_CATEGORIES, min_items=1),
        metadata={
            "description": "{feature: [min, max]} for numbers, {feature: [category, ...]} for categories"
        },
    )
    method = fields.String(
        validate=validate.OneOf(["random", "genetic", "kdtree"]),
        metadata={
            "description": "Default random (Candor's vectorised search); genetic and kdtree run dice-ml"
        },
    )
    proximity_weight = fields.Float(allow_nan=False, validate=validate.Range(min=0, max=1000))
    diversity_weight = fields.Float(allow_nan=False, validate=validate.Range(min=0, max=1000))
    seed = fields.Integer(
        strict=True, validate=validate.Range(min=0, max=2**32 - 1), metadata={"description": "Default 0"}
    )
    budget_ms = fields.Integer(
        strict=True,
        validate=BUDGET,
        metadata={
            "description": "Time budget of the whole request; default 3000, capped by CANDOR_MAX_CF_BUDGET_MS"
        },
    )


class CounterfactualRequestSchema(RecourseInstancesSchema, CounterfactualOptionsSchema):
    pass


class ChangeSchema(StrictSchema):
    feature = fields.String(required=True)
    from_ = fields.Raw(required=True, data_key="from")
    to = fields.Raw(required=True)


class CounterfactualSchema(StrictSchema):
    instance = fields.Dict(required=True, metadata={"description": "The full counterfactual row"})
    changes = fields.List(fields.Nested(ChangeSchema), required=True)
    prediction = fields.Nested(
        PredictionSchema, required=True, metadata={"description": "Re-scored by the model"}
    )
    valid = fields.Boolean(required=True)
    constraints_ok = fields.Boolean(required=True)


class CounterfactualMetricsSchema(StrictSchema):
    found = fields.Integer(required=True)
    requested = fields.Integer(required=True)
    validity = fields.Float(required=True)
    sparsity = fields.Float(
        allow_none=True, required=True, metadata={"description": "Mean number of changed features"}
    )
    proximity = fields.Float(
        allow_none=True,
        required=True,
        metadata={
            "description": "Mean per-feature distance to the query: |change|/MAD (numbers), 0/1 (categories)"
        },
    )
    diversity = fields.Float(
        allow_none=True, required=True, metadata={"description": "Mean pairwise distance"}
    )


class CounterfactualResultSchema(StrictSchema):
    status = fields.String(
        required=True, validate=validate.OneOf(["ok", "no_counterfactual", "already_desired"])
    )
    instance = fields.Dict(required=True)
    prediction = fields.Nested(PredictionSchema, required=True)
    counterfactuals = fields.List(fields.Nested(CounterfactualSchema), required=True)
    metrics = fields.Nested(CounterfactualMetricsSchema, required=True)
    search = fields.Dict(metadata={"description": "rows_scored and elapsed_ms for this instance"})
    reason = fields.String(metadata={"description": "Why there is no counterfactual"})
    constraints = fields.Dict(
        metadata={"description": "The constraints that bound the search (no_counterfactual)"}
    )
    ood = fields.Nested(OodFlagSchema, metadata={"description": "Out-of-distribution flags of the query"})
    summary = fields.String(
        metadata={"description": "Plain-language summary, options by effort (?narrative=true)"}
    )


class CounterfactualExplanationSchema(StrictSchema):
    id = fields.String(required=True)
    schema_version = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["counterfactual"]))
    created_at = fields.DateTime(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    method = fields.Nested(MethodSchema, required=True)
    output = fields.Dict(required=True, metadata={"description": "{desired: {class} or {range}}"})
    results = fields.List(fields.Nested(CounterfactualResultSchema), required=True)
    quality = fields.Dict(required=True)
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)


class ReasonsRequestSchema(RecourseInstancesSchema):
    max_reasons = fields.Integer(
        strict=True, validate=validate.Range(min=1, max=20), metadata={"description": "Default 4"}
    )
    with_counterfactual = JsonBoolean(
        metadata={"description": "Default false: also say which change would address each reason"}
    )
    seed = fields.Integer(strict=True, validate=validate.Range(min=0, max=2**32 - 1))
    budget_ms = fields.Integer(strict=True, validate=BUDGET)


class AddressSchema(StrictSchema):
    changes = fields.List(fields.Nested(ChangeSchema), required=True)
    counterfactual = fields.Dict(required=True)


class ReasonSchema(StrictSchema):
    rank = fields.Integer(required=True)
    feature = fields.String(required=True)
    value = fields.Raw(required=True)
    attribution = fields.Float(
        required=True, metadata={"description": "SHAP toward the favourable class (< 0)"}
    )
    code = fields.String(allow_none=True, required=True)
    text = fields.String(required=True)
    address = fields.Nested(AddressSchema, allow_none=True)


class ProtectedExcludedSchema(StrictSchema):
    feature = fields.String(required=True)
    attribution = fields.Float(required=True)
    would_rank = fields.Integer(required=True)


class ReasonsResultSchema(StrictSchema):
    status = fields.String(required=True, validate=validate.OneOf(["declined", "not_declined"]))
    prediction = fields.Nested(PredictionSchema, required=True)
    reasons = fields.List(fields.Nested(ReasonSchema), required=True)
    protected_excluded = fields.List(fields.Nested(ProtectedExcludedSchema), required=True)
    counterfactual_status = fields.String(allow_none=True, required=True)
    ood = fields.Nested(OodFlagSchema, metadata={"description": "Out-of-distribution flags of the instance"})
    summary = fields.String(metadata={"description": "Plain-language summary (?narrative=true)"})


class ReasonsExplanationSchema(StrictSchema):
    id = fields.String(required=True)
    schema_version = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["reasons"]))
    created_at = fields.DateTime(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    method = fields.Nested(MethodSchema, required=True)
    output = fields.Dict(required=True)
    results = fields.List(fields.Nested(ReasonsResultSchema), required=True)
    quality = fields.Dict(required=True)
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)

"""Schemas for understanding a version's data: out-of-distribution flags, the dataset profile and the
explanation segments."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas.common import ModelRefSchema, StrictSchema


def _matrix() -> fields.List:
    return fields.List(fields.List(fields.Float(allow_none=True)), required=True)


class OodFlagSchema(StrictSchema):
    """One explained instance's out-of-distribution flags (how they were computed: ``quality.ood``)."""

    score = fields.Float(
        required=True,
        metadata={
            "description": "scikit-learn IsolationForest.score_samples of the encoded row: lower is more "
            "anomalous; below quality.ood.threshold is a score outlier"
        },
    )
    score_outlier = fields.Boolean(required=True, metadata={"description": "score < quality.ood.threshold"})
    is_outlier = fields.Boolean(
        required=True, metadata={"description": "score_outlier, or any feature outside the reference's range"}
    )
    features_outside_range = fields.List(
        fields.String(),
        required=True,
        metadata={
            "description": "Numbers outside the reference data's [min, max], categories it never holds"
        },
    )


class SegmentsQuerySchema(StrictSchema):
    k_max = fields.Integer(
        load_default=6,
        validate=validate.Range(min=2, max=8),
        metadata={"description": "Largest number of segments tried (2-8, default 6)"},
    )


class CategoryCountSchema(Schema):
    value = fields.Raw(required=True)
    count = fields.Integer(required=True)
    share = fields.Float(required=True)


class FeatureProfileSchema(Schema):
    feature = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["numeric", "categorical", "boolean"]))
    count = fields.Integer(required=True)
    missing = fields.Integer(required=True)
    min = fields.Float(allow_none=True, metadata={"description": "numeric features"})
    max = fields.Float(allow_none=True)
    mean = fields.Float(allow_none=True)
    std = fields.Float(allow_none=True, metadata={"description": "sample standard deviation (ddof=1)"})
    quantiles = fields.Dict(
        keys=fields.String(),
        values=fields.Float(allow_none=True),
        metadata={"description": "p5, p25, p50, p75, p95 (linear interpolation)"},
    )
    distinct = fields.Integer(metadata={"description": "categorical and boolean features"})
    top_categories = fields.List(fields.Nested(CategoryCountSchema))


class CorrelationsSchema(Schema):
    numeric_features = fields.List(fields.String(), required=True)
    pearson = _matrix()
    spearman = _matrix()
    categorical_features = fields.List(fields.String(), required=True)
    cramers_v = _matrix()
    cramers_v_method = fields.String(required=True)


class AnomalySchema(Schema):
    row = fields.Integer(required=True, metadata={"description": "0-based position in the reference data"})
    score = fields.Float(required=True)
    values = fields.Dict(required=True)


class AnomaliesSchema(Schema):
    count = fields.Integer(required=True, metadata={"description": "Reference rows scored below threshold"})
    share = fields.Float(required=True)
    threshold = fields.Float(required=True)
    top = fields.List(fields.Nested(AnomalySchema), required=True)
    detector = fields.Dict(required=True)


class ProfileSchema(Schema):
    kind = fields.String(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    cached = fields.Boolean(required=True)
    rows = fields.Integer(required=True)
    features = fields.List(fields.Nested(FeatureProfileSchema), required=True)
    correlations = fields.Nested(CorrelationsSchema, required=True)
    anomalies = fields.Nested(AnomaliesSchema, required=True)
    summary = fields.String(required=True)
    library_versions = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)


class DominantFeatureSchema(Schema):
    feature = fields.String(required=True)
    mean_abs_attribution = fields.Float(required=True)
    mean_attribution = fields.Float(required=True)


class SegmentSchema(Schema):
    segment = fields.Integer(required=True)
    size = fields.Integer(required=True)
    share = fields.Float(required=True)
    dominant_features = fields.List(fields.Nested(DominantFeatureSchema), required=True)
    outcome_rate = fields.Float(
        allow_none=True,
        required=True,
        metadata={"description": "Share predicted the favourable class, or the mean prediction (regression)"},
    )
    class_shares = fields.Dict(keys=fields.String(), values=fields.Float())
    description = fields.String(required=True)


class SilhouetteSchema(Schema):
    k = fields.Integer(required=True)
    score = fields.Float(required=True)


class SegmentsSchema(Schema):
    kind = fields.String(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    cached = fields.Boolean(required=True)
    method = fields.Dict(required=True)
    attributions = fields.Dict(required=True, metadata={"description": "The SHAP method and output space"})
    rows = fields.Integer(required=True)
    silhouette = fields.List(fields.Nested(SilhouetteSchema), required=True)
    k = fields.Integer(required=True, metadata={"description": "The k with the highest silhouette"})
    outcome = fields.Dict(required=True, metadata={"description": "{statistic, class}"})
    segments = fields.List(fields.Nested(SegmentSchema), required=True)
    assignments = fields.Dict(
        required=True, metadata={"description": "{rows: reference positions, labels: segment of each}"}
    )
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)

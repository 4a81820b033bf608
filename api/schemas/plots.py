"""Query schemas of the understanding layer: plain-language narratives on the explain routes, and plots of
recorded explanations and of global importance."""

from __future__ import annotations

from marshmallow import fields, validate

from api.schemas.common import MAX_INDEX, MAX_INT32, StrictSchema, integer

FORMAT = fields.String(
    load_default="svg",
    validate=validate.OneOf(["svg", "png"]),
    metadata={"description": "svg (default; text stays text) or png (100 DPI)"},
)


class NarrativeQuerySchema(StrictSchema):
    narrative = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also return a plain-language summary per result (results[i].summary): "
            "deterministic sentences built from the numbers, with the output space and caveats stated"
        },
    )


class RecordPlotQuerySchema(StrictSchema):
    format = FORMAT
    instance = integer(
        0,
        MAX_INT32,
        load_default=0,
        metadata={"description": "Which result of the record to draw (0-based)"},
    )
    view = fields.String(
        validate=validate.OneOf(["head", "layer_mean", "layer_max", "rollout"]),
        metadata={
            "description": "Attention records only: one head, a layer's mean (or max) over heads, or the "
            "rollout; default: the rollout if recorded, else the last layer's aggregate or head mean"
        },
    )
    layer = integer(
        0,
        MAX_INDEX,
        metadata={"description": "Attention: the layer (default: the last recorded one)"},
    )
    head = integer(
        0,
        MAX_INDEX,
        metadata={"description": "Attention, view=head: the head (default: the first recorded one)"},
    )


class BertvizQuerySchema(StrictSchema):
    view = fields.String(
        load_default="head",
        validate=validate.OneOf(["head", "model"]),
        metadata={"description": "bertviz's head view (one layer, its heads) or model view (all of them)"},
    )
    instance = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=1_000_000),
        metadata={"description": "Which result of the record to show (0-based)"},
    )


class ImportancePlotQuerySchema(StrictSchema):
    format = FORMAT
    kind = fields.String(
        load_default="bar",
        validate=validate.OneOf(["bar", "beeswarm"]),
        metadata={
            "description": "bar: mean |SHAP| per feature; beeswarm: each reference row's SHAP value per "
            "feature, coloured by the feature's value"
        },
    )


class ProfilePlotQuerySchema(StrictSchema):
    format = FORMAT
    method = fields.String(
        load_default="pearson",
        validate=validate.OneOf(["pearson", "spearman", "cramers_v"]),
        metadata={"description": "pearson or spearman (numeric features), cramers_v (categorical features)"},
    )

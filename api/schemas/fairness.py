"""The fairness report's request (rows, protected attributes, bins, outcomes, bootstrap) and its envelope."""

from __future__ import annotations

import itertools
from typing import Any

from marshmallow import ValidationError, fields, post_load, validate, validates_schema

from api.schemas.common import (
    MAX_FEATURE_NAME,
    MAX_LABEL,
    BoundedList,
    StrictSchema,
    UniqueList,
    integer,
    text,
)
from api.schemas.explain import ExplanationSchema
from api.schemas.models import ObjectRows
from api.schemas.understanding import OodFlagSchema


def _interval() -> fields.Field:
    return _described(BoundedList(fields.Float(allow_none=True), 2, 2), "95% bootstrap interval [low, high]")


def _described(field: fields.Field, description: str) -> fields.Field:
    field.metadata = {**field.metadata, "description": description}
    return field


def _increasing(edges: list[float]) -> None:
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValidationError("Bin edges must be strictly increasing.")


MAX_BINNED = 100
"""Most attributes a request's ``bins`` names."""


def _few_attributes(bins: dict[str, Any]) -> None:
    if len(bins) > MAX_BINNED:
        raise ValidationError(f"At most {MAX_BINNED} attributes.")


class _FairnessOptions(StrictSchema):
    attributes = _described(
        UniqueList(text(MAX_FEATURE_NAME, min_length=1), 100, min_items=1, load_default=None),
        "Protected features to report on (default: every feature the manifest declares protected)",
    )
    bins = _described(
        fields.Dict(
            keys=text(MAX_FEATURE_NAME, min_length=1),
            values=BoundedList(fields.Float(allow_nan=False), 100, min_items=1, validate=_increasing),
            validate=_few_attributes,
            load_default=None,
            metadata={"maxProperties": MAX_BINNED},
        ),
        "Cut points per numeric attribute (at most 100 attributes, 100 edges each), overriding the "
        "manifest's bins",
    )
    seed = _described(integer(0, 2**32 - 1, load_default=0), "Bootstrap seed")
    resamples = _described(
        integer(0, 100_000, allow_none=True, load_default=None),
        "Bootstrap resamples (default and most: CANDOR_MAX_FAIRNESS_RESAMPLES; 0: no intervals)",
    )
    min_group_size = _described(
        integer(1, 1_000_000, allow_none=True, load_default=None),
        "Groups with fewer rows are marked too_small and left out of the between-group figures (default: "
        "CANDOR_FAIRNESS_MIN_GROUP_SIZE)",
    )
    outcome_column = _described(
        text(MAX_FEATURE_NAME, min_length=1, allow_none=True, load_default=None),
        "A column each row carries beside the model's features: its true outcome (a class label). A job's "
        "uploaded file (or dataset) has it as a column",
    )


class FairnessRequestSchema(_FairnessOptions):
    instances = ObjectRows(load_default=list, metadata={"description": "Rows as {feature: value} objects"})
    data = _described(
        fields.String(validate=validate.OneOf(["instances", "reference"]), load_default="instances"),
        "The rows sent, or the version's reference data (its target column as the true outcomes)",
    )
    outcomes = _described(
        BoundedList(text(MAX_LABEL), 1_000_000, allow_none=True, load_default=None),
        "True outcome (a class label) per row sent, in order",
    )
    offset = _described(integer(0, 10_000_000, load_default=0), "First flipping row listed")
    limit = _described(integer(0, 1000, load_default=20), "Flipping rows listed")

    @validates_schema
    def _rows(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("outcomes") and data.get("outcome_column"):
            raise ValidationError(
                "Send the outcomes as a list or as a column of the rows, not both.", "outcomes"
            )
        if data.get("data") == "reference":
            for name in ("instances", "outcomes", "outcome_column"):
                if data.get(name):
                    raise ValidationError("Not with data: reference (its own rows and outcomes).", name)
        elif not data.get("instances"):
            raise ValidationError("Send at least one row, or data: reference.", "instances")


class FairnessJobSchema(_FairnessOptions):
    """A job's options: each row gets its own part (groups, decision, flip-test moves); the summary holds
    the report's figures over all the rows."""

    instances = ObjectRows(load_default=list)

    @post_load
    def _per_row(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        return {**data, "per_row": True}


# -- the response --------------------------------------------------------------------------------------------
class GroupSchema(StrictSchema):
    group = fields.String(required=True)
    value = _described(fields.Raw(), "The value a row gets when moved into this group (flip test)")
    count = fields.Integer(required=True)
    too_small = fields.Boolean(required=True)
    selection_rate = fields.Float(allow_none=True)
    selection_rate_interval = _interval()
    mean_probability = fields.Float(allow_none=True)
    mean_probability_interval = _interval()
    dppl = _described(
        fields.Float(allow_none=True), "Clarify DPPL: the other rows' selection rate minus this"
    )
    dppl_interval = _interval()
    di = _described(fields.Float(allow_none=True), "Clarify DI: this selection rate over the other rows'")
    di_interval = _interval()
    true_positive_rate = fields.Float(allow_none=True)
    true_positive_rate_interval = _interval()
    false_positive_rate = fields.Float(allow_none=True)
    false_positive_rate_interval = _interval()
    precision = fields.Float(allow_none=True)
    precision_interval = _interval()
    accuracy = fields.Float(allow_none=True)
    accuracy_interval = _interval()


class BetweenSchema(StrictSchema):
    groups_compared = fields.List(fields.String(), required=True)
    demographic_parity_difference = fields.Float(allow_none=True)
    demographic_parity_difference_interval = _interval()
    demographic_parity_ratio = fields.Float(allow_none=True)
    demographic_parity_ratio_interval = _interval()
    equalized_odds_difference = fields.Float(allow_none=True)
    equalized_odds_difference_interval = _interval()
    four_fifths_flag = fields.Boolean(required=True)


class PairSchema(StrictSchema):
    from_ = fields.String(required=True, data_key="from")
    to = fields.String(required=True)
    rows = fields.Integer(required=True)
    flips = fields.Integer(required=True)
    flip_rate = fields.Float(required=True)
    mean_change = fields.Float(required=True)
    largest_change = fields.Float()


class FlipTestSchema(StrictSchema):
    attribute = fields.String()
    moves = fields.Integer(required=True)
    flip_rate = fields.Float(required=True)
    rows_flipping = fields.Integer()
    pairs = fields.List(fields.Nested(PairSchema), required=True)


class ProxySchema(StrictSchema):
    feature = fields.String(required=True)
    measure = fields.String(required=True, validate=validate.OneOf(["cramers_v", "correlation_ratio"]))
    association = fields.Float(allow_none=True, required=True)
    importance_rank = fields.Integer(allow_none=True)
    important = fields.Boolean()


class ProxiesSchema(StrictSchema):
    attribute = fields.String(required=True)
    associations = fields.List(fields.Nested(ProxySchema), required=True)
    strongest = fields.List(fields.Nested(ProxySchema), required=True)


class AttributeSchema(StrictSchema):
    attribute = fields.String(required=True)
    bins = fields.List(fields.Float(), allow_none=True)
    groups = fields.List(fields.Nested(GroupSchema), required=True)
    between = fields.Nested(BetweenSchema, required=True)
    flip_test = fields.Nested(FlipTestSchema, required=True)
    proxies = fields.Nested(ProxiesSchema, required=True)


class FlipRowSchema(StrictSchema):
    row = fields.Integer(required=True)
    attribute = fields.String(required=True)
    from_ = fields.String(required=True, data_key="from")
    to = fields.String(required=True)
    value = fields.Raw(required=True)
    probability_before = fields.Float(required=True)
    probability_after = fields.Float(required=True)


class FlippingRowsSchema(StrictSchema):
    total = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    rows = fields.List(fields.Nested(FlipRowSchema), required=True)


class MoveSchema(StrictSchema):
    attribute = fields.String(required=True)
    to = fields.String(required=True)
    probability = fields.Float(required=True)
    flipped = fields.Boolean(required=True)


class RowPartSchema(StrictSchema):
    groups = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    probability = fields.Float(required=True)
    decision = fields.Boolean(required=True)
    outcome = _described(fields.String(), "The row's true outcome, when the job has an outcome column")
    outcome_favourable = _described(fields.Boolean(), "Whether that outcome is the favourable class")
    moves = fields.List(fields.Nested(MoveSchema), required=True)
    settings = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class FairnessResultSchema(StrictSchema):
    """The report over all the rows, or (in a job) one row's part of it."""

    rows = fields.Integer()
    favourable_class = fields.String()
    with_outcomes = fields.Boolean()
    attributes = fields.List(fields.Nested(AttributeSchema))
    flipping_rows = fields.Nested(FlippingRowsSchema)
    importance_top = _described(fields.List(fields.String()), "The five most important features")
    row = _described(fields.Nested(RowPartSchema), "A job row's part")
    ood = _described(fields.Nested(OodFlagSchema), "The row's flags, when one row was sent")
    summary = _described(fields.String(), "With ?narrative=true")


class FairnessExplanationSchema(ExplanationSchema):
    kind = fields.String(required=True, validate=validate.OneOf(["fairness_report"]))
    results = fields.List(fields.Nested(FairnessResultSchema), required=True)

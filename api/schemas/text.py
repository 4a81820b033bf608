"""Schemas for text-model explanations: attention maps and Captum token attributions."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate

from api.schemas.common import (
    MAX_INDEX,
    MAX_LABEL,
    JsonBoolean,
    ModelRefSchema,
    StrictSchema,
    UniqueList,
    integer,
    text,
)
from api.schemas.explain import MethodSchema
from api.schemas.models import InstancesSchema, TextRowsSchema
from model_store.array_codec import DTYPES, ENCODINGS, JSON_ENCODINGS

TRUNCATE = JsonBoolean(
    metadata={"description": "Default false: texts over the model's max_tokens are refused (422) unless true"}
)


class TextInstancesSchema(InstancesSchema):
    truncate = TRUNCATE


JSON_AND_BASE64 = (
    "Default json: each weights array as nested JSON numbers (float32). base64: each "
    'as {"dtype", "shape", "byte_order": "little", "data"}, data = base64 of the little-endian '
    "bytes in C order (numpy.frombuffer(base64.b64decode(data), dtype).reshape(shape))."
)
SAFETENSORS = (
    "safetensors: the answer is a safetensors file (application/octet-stream) whose tensors are the "
    "weights arrays, each named by its place in the envelope (results.0.attention.5.weights), and "
    'whose __metadata__["explanation"] is the envelope as JSON with each array replaced by its '
    "tensor's name; safetensors.numpy.load(body) reads the arrays."
)
ENCODING_APPLIES = "Applies to per-head, aggregated and rollout weights; not with format bertviz (422)"


class AttentionRequestSchema(TextRowsSchema):
    layers = UniqueList(
        integer(0, MAX_INDEX, strict=True),
        MAX_INDEX + 1,
        min_items=1,
        metadata={"description": "Default: all (0-based, each named once)"},
    )
    heads = UniqueList(
        integer(0, MAX_INDEX, strict=True),
        MAX_INDEX + 1,
        min_items=1,
        metadata={"description": "Default: all (0-based, each named once)"},
    )
    aggregate = fields.String(
        validate=validate.OneOf(["none", "mean", "max"]),
        metadata={"description": "Default none: one matrix per head; mean or max over the selected heads"},
    )
    rollout = JsonBoolean(metadata={"description": "Also return attention rollout over the selected layers"})
    format = fields.String(
        validate=validate.OneOf(["candor", "bertviz"]),
        metadata={"description": "Default candor; bertviz returns the JSON bertviz's head view reads"},
    )
    encoding = fields.String(
        validate=validate.OneOf(JSON_ENCODINGS),
        metadata={"description": f"{JSON_AND_BASE64} {ENCODING_APPLIES}"},
    )
    dtype = fields.String(
        validate=validate.OneOf(DTYPES),
        metadata={
            "description": "Default float32. float16 (encoding base64 or safetensors only, else 422): half "
            "the bytes, values rounded to nearest (absolute error <= 2^-12 for weights <= 1)"
        },
    )
    truncate = TRUNCATE


class AttentionHttpRequestSchema(AttentionRequestSchema):
    """The attention endpoint's request: a batch job's options (``AttentionRequestSchema``) plus the binary
    answer, which only an HTTP response can carry."""

    encoding = fields.String(
        validate=validate.OneOf(ENCODINGS),
        metadata={"description": f"{JSON_AND_BASE64} {SAFETENSORS} {ENCODING_APPLIES}"},
    )


class StepsField(fields.Field):
    """An integer number of steps, or ``"auto"``."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise ValidationError('An integer from 1 to 1024, or "auto".')
        return value


class AttributionsRequestSchema(TextRowsSchema):
    method = fields.String(
        validate=validate.OneOf(["integrated_gradients"]),
        metadata={"description": "Default integrated_gradients (Captum LayerIntegratedGradients)"},
    )
    target = text(MAX_LABEL, metadata={"description": "Label to explain; default the predicted one"})
    n_steps = StepsField(
        metadata={"description": 'Default 50; "auto" doubles from 8 until the delta <= tolerance'}
    )
    tolerance = fields.Float(allow_nan=False, validate=validate.Range(min=0, min_inclusive=False, max=1))
    baseline = fields.String(
        validate=validate.OneOf(["pad", "mask"]), metadata={"description": "Default pad"}
    )
    internal_batch_size = fields.Integer(strict=True, validate=validate.Range(min=1, max=1024))
    budget_ms = fields.Integer(
        strict=True,
        validate=validate.Range(min=10, max=600_000),
        metadata={"description": 'Time budget of n_steps "auto" (default 20000)'},
    )
    truncate = TRUNCATE


class TextExplanationSchema(StrictSchema):
    id = fields.String(required=True)
    schema_version = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["attention", "token_attribution"]))
    created_at = fields.DateTime(required=True)
    model = fields.Nested(ModelRefSchema, required=True)
    method = fields.Nested(MethodSchema, required=True)
    output = fields.Dict(required=True)
    results = fields.List(
        fields.Dict(),
        required=True,
        metadata={
            "description": "Per text: prediction, tokens [{index, token, start, end, special}], truncated, "
            "original_tokens, then attention/rollout/bertviz or attributions per token and per word"
        },
    )
    quality = fields.Dict(required=True)
    timing_ms = fields.Dict(keys=fields.String(), values=fields.Float(), required=True)

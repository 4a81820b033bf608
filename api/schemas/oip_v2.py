"""Schemas of the Open Inference Protocol V2 (KServe V2) REST API: tensors, requests, answers, metadata."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate

from api.schemas.common import BoundedList, ProblemSchema, StrictSchema

DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP32",
    "FP64",
    "BYTES",
)
"""The OIP datatypes accepted in JSON (FP16 has no JSON form)."""
MAX_TENSORS = 4096
MAX_ELEMENTS = 1_000_000
MAX_DIMS = 8
MAX_DIM = 2**31 - 1
MAX_NAME = 128
MAX_PARAMETERS = 64
MAX_PARAMETER_TEXT = 1024
NAME = validate.Length(min=1, max=MAX_NAME)


class ParameterValue(fields.Field):
    """An OIP parameter value: a string (bounded), a finite number or a boolean."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and len(value) <= MAX_PARAMETER_TEXT:
            return value
        if isinstance(value, bool | int | float) and value == value and abs(value) != float("inf"):
            return value
        raise ValidationError(f"A string (at most {MAX_PARAMETER_TEXT} characters), number or boolean.")


def _parameters(description: str) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=64)),
        values=ParameterValue(),
        validate=validate.Length(max=MAX_PARAMETERS),
        metadata={"description": description, "maxProperties": MAX_PARAMETERS},
    )


def _shape(minimum: int) -> fields.List:
    dimension = fields.Integer(strict=True, validate=validate.Range(min=minimum, max=MAX_DIM))
    return BoundedList(dimension, MAX_DIMS, 1, required=True)


class RequestInputSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME, metadata={"description": "A feature, or any name"})
    shape = _shape(0)
    datatype = fields.String(required=True, validate=validate.OneOf(DATATYPES))
    parameters = _parameters("Tensor parameters (read by no model here)")
    data = BoundedList(
        fields.Raw(),
        MAX_ELEMENTS,
        required=True,
        metadata={"description": "Elements in row-major order, flat or nested as the shape"},
    )


class RequestOutputSchema(StrictSchema):
    name = fields.String(required=True, validate=NAME)
    parameters = _parameters("Output parameters (none is read)")


class InferRequestSchema(StrictSchema):
    id = fields.String(validate=validate.Length(max=256), metadata={"description": "Echoed in the answer"})
    model_name = fields.String(
        validate=validate.Length(max=MAX_NAME), metadata={"description": "Sent by some clients; ignored"}
    )
    parameters = _parameters(
        "explain: SHAP options algorithm, output, target, seed, max_evals, background_rows; infer: ignored"
    )
    inputs = BoundedList(fields.Nested(RequestInputSchema), MAX_TENSORS, 1, required=True)
    outputs = BoundedList(
        fields.Nested(RequestOutputSchema),
        16,
        1,
        metadata={"description": "The outputs to return (default: all)"},
    )


class ResponseOutputSchema(StrictSchema):
    name = fields.String(required=True)
    shape = fields.List(fields.Integer(), required=True)
    datatype = fields.String(required=True, validate=validate.OneOf(DATATYPES))
    parameters = fields.Dict(keys=fields.String(), values=fields.Raw())
    data = fields.List(fields.Raw(), required=True)


class InferResponseSchema(StrictSchema):
    model_name = fields.String(required=True)
    model_version = fields.String(required=True)
    id = fields.String(required=True)
    parameters = fields.Dict(keys=fields.String(), values=fields.Raw())
    outputs = fields.List(fields.Nested(ResponseOutputSchema), required=True)


class MetadataTensorSchema(StrictSchema):
    name = fields.String(required=True)
    datatype = fields.String(required=True, validate=validate.OneOf(DATATYPES))
    shape = fields.List(fields.Integer(), required=True, metadata={"description": "-1: any size"})


class ModelMetadataSchema(StrictSchema):
    name = fields.String(required=True)
    versions = fields.List(fields.String(), required=True)
    platform = fields.String(required=True)
    inputs = fields.List(fields.Nested(MetadataTensorSchema), required=True)
    outputs = fields.List(fields.Nested(MetadataTensorSchema), required=True)


class ServerMetadataSchema(StrictSchema):
    name = fields.String(required=True)
    version = fields.String(required=True)
    extensions = fields.List(fields.String(), required=True)


class LiveSchema(StrictSchema):
    live = fields.Boolean(required=True)


class ReadySchema(StrictSchema):
    ready = fields.Boolean(required=True)


class ModelReadySchema(ReadySchema):
    name = fields.String(required=True)


class OipProblemSchema(ProblemSchema):
    """A problem document with the ``error`` message that KServe clients read."""

    error = fields.String(required=True, metadata={"description": "The detail and first field messages"})

"""Open Inference Protocol tensors <-> Candor instances: decoding checks every tensor against its shape and
datatype and names the input; the rows it makes are then checked against the manifest by the model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from model_store.errors import InvalidInput
from model_store.manifest import FeatureSpec, Manifest

INTEGER_TYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"})
FLOAT_TYPES = frozenset({"FP32", "FP64"})
TRUE_TEXT, FALSE_TEXT = frozenset({"true", "1"}), frozenset({"false", "0"})


def _bad(field: str, message: str) -> InvalidInput:
    return InvalidInput("The inputs do not match the model's tensors.", {field: [message]})


def _flat(data: Sequence[Any], depth: int, field: str) -> list[Any]:
    """Row-major elements of flat or nested data (nested no deeper than the shape)."""
    if not any(isinstance(item, list) for item in data):
        return list(data)
    if depth <= 1 or not all(isinstance(item, list) for item in data):
        raise _bad(field, "Nest the data as the shape, or send it flat.")
    return [element for item in data for element in _flat(item, depth - 1, field)]


def _element_ok(value: Any, datatype: str) -> bool:
    if datatype == "BYTES":
        return isinstance(value, str)
    if datatype == "BOOL":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if datatype in INTEGER_TYPES:
        return isinstance(value, int) and (value >= 0 or not datatype.startswith("U"))
    return isinstance(value, int | float) and math.isfinite(value)


def elements(tensor: dict[str, Any], index: int) -> list[Any]:
    """The tensor's elements, checked against its shape and datatype."""
    field = f"inputs.{index}.data"
    shape, datatype = tensor["shape"], tensor["datatype"]
    values = _flat(tensor["data"], len(shape), field)
    if math.prod(shape) != len(values):
        raise _bad(field, f"The shape {shape} holds {math.prod(shape)} elements; the data has {len(values)}.")
    for position, value in enumerate(values):
        if not _element_ok(value, datatype):
            kind = "a string" if datatype == "BYTES" else f"a {datatype} value"
            raise _bad(f"{field}.{position}", f"Expected {kind}.")
    return values


def _from_text(spec: FeatureSpec, value: str) -> Any:
    """A BYTES element for a feature that is not text: numbers and booleans are parsed from their text."""
    if spec.type == "numeric":
        try:
            return float(value)
        except ValueError:
            return value  # refused by the model's check, naming the row and feature
    if spec.type == "boolean":
        lowered = value.lower()
        return True if lowered in TRUE_TEXT else False if lowered in FALSE_TEXT else value
    if spec.categories and value not in spec.categories and value.lstrip("-").isdigit():
        number = int(value)
        return number if number in spec.categories else value
    return value


def _row(features: list[FeatureSpec], values: Sequence[Any], datatypes: Sequence[str]) -> dict[str, Any]:
    return {
        spec.name: _from_text(spec, value) if datatype == "BYTES" else value
        for spec, value, datatype in zip(features, values, datatypes, strict=True)
    }


def _rows(shape: list[int], field: str) -> int:
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        return shape[0]
    raise _bad(field, "One input per feature has the shape [n] or [n, 1].")


def tabular_instances(inputs: list[dict[str, Any]], manifest: Manifest) -> list[dict[str, Any]]:
    """Rows from one tensor [n, features] in the manifest's order, or from one input per feature."""
    features, names = manifest.features, manifest.feature_names
    if len(inputs) == 1 and inputs[0]["name"] not in names:
        tensor, width = inputs[0], len(features)
        if len(tensor["shape"]) != 2 or tensor["shape"][1] != width:
            raise _bad("inputs.0.shape", f"One tensor has the shape [n, {width}] (the model's features).")
        values = elements(tensor, 0)
        types = [tensor["datatype"]] * width
        return [_row(features, values[i : i + width], types) for i in range(0, len(values), width)]
    by_name: dict[str, tuple[dict[str, Any], int]] = {}
    for index, tensor in enumerate(inputs):
        if tensor["name"] not in names:
            raise _bad(f"inputs.{index}.name", "Not a feature of the model (see GET /v2/models/{name}).")
        if tensor["name"] in by_name:
            raise _bad(f"inputs.{index}.name", "This feature is given twice.")
        by_name[tensor["name"]] = (tensor, index)
    missing = [name for name in names if name not in by_name]
    if missing:
        raise _bad("inputs", "Missing features: " + ", ".join(missing[:10]))
    counts = {_rows(t["shape"], f"inputs.{i}.shape") for t, i in by_name.values()}
    if len(counts) != 1:
        raise _bad("inputs", "Every input must have the same number of rows.")
    columns = [elements(*by_name[name]) for name in names]
    types = [by_name[name][0]["datatype"] for name in names]
    return [_row(features, row, types) for row in zip(*columns, strict=True)]


def text_instances(inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Texts from one BYTES input of shape [n] (or [n, 1])."""
    if len(inputs) != 1 or inputs[0]["datatype"] != "BYTES":
        raise _bad("inputs", "A text model takes one BYTES input of shape [n]: the texts.")
    _rows(inputs[0]["shape"], "inputs.0.shape")
    return [{"text": text} for text in elements(inputs[0], 0)]


def feature_datatype(spec: FeatureSpec) -> str:
    """The OIP datatype of a feature's input."""
    if spec.type == "numeric":
        return "FP64"
    if spec.type == "boolean":
        return "BOOL"
    categories = spec.categories or []
    if categories and all(isinstance(c, int) for c in categories):
        return "INT64"
    return "BYTES"

"""The two protocols: each builds its request body from a batch of rows and reads its answer, side by side.

KServe V1: ``POST /v1/models/{model}:predict`` with ``{"instances": [...]}``, answered by
``{"predictions": [...]}`` (one list of class probabilities or one number per row).
Open Inference Protocol V2: ``POST /v2/models/{model}[/versions/{v}]/infer`` with named typed inputs (one per
feature, MLServer's ``pd`` content type; or one ``FP64`` matrix) and the output holding the answer requested
by name, answered by ``{"outputs": [{"name", "shape", "datatype", "data"}]}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np

from model_store.manifest import PredictorSpec


class WrongAnswer(Exception):
    """The predictor answered something that is not the expected shape (the text says what)."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """Rows as the predictor reads them: one list of plain values per feature, and each feature's V2
    datatype (``FP64``, ``INT64``, ``BOOL`` or ``BYTES``)."""

    names: list[str]
    columns: list[list[Any]]
    datatypes: list[str]
    rows: int

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.names, values, strict=True)) for values in zip(*self.columns, strict=True)]

    def lists(self) -> list[list[Any]]:
        return [list(values) for values in zip(*self.columns, strict=True)]


class WireProtocol(Protocol):
    def path(self, spec: PredictorSpec) -> str: ...

    def body(self, batch: Batch, spec: PredictorSpec, output: str) -> dict[str, Any]: ...

    def answer(self, payload: Any, spec: PredictorSpec, output: str, rows: int, width: int) -> np.ndarray: ...


class V1:
    def path(self, spec: PredictorSpec) -> str:
        return f"/v1/models/{spec.model}:predict"

    def body(self, batch: Batch, spec: PredictorSpec, output: str) -> dict[str, Any]:
        return {"instances": batch.records() if spec.inputs == "columns" else batch.lists()}

    def answer(self, payload: Any, spec: PredictorSpec, output: str, rows: int, width: int) -> np.ndarray:
        predictions = payload.get("predictions") if isinstance(payload, dict) else None
        if not isinstance(predictions, list):
            raise WrongAnswer("no predictions list")
        if len(predictions) != rows:
            raise WrongAnswer(f"{len(predictions)} predictions for {rows} rows")
        if width == 1 and all(_is_number(p) for p in predictions):
            return _finite(np.asarray(predictions, dtype=float).reshape(rows, 1))
        if not all(isinstance(p, list) and len(p) == width and all(map(_is_number, p)) for p in predictions):
            raise WrongAnswer(f"predictions are not {width} numbers per row")
        return _finite(np.asarray(predictions, dtype=float).reshape(rows, width))


class V2:
    def path(self, spec: PredictorSpec) -> str:
        version = f"/versions/{spec.version}" if spec.version else ""
        return f"/v2/models/{spec.model}{version}/infer"

    def body(self, batch: Batch, spec: PredictorSpec, output: str) -> dict[str, Any]:
        outputs = [{"name": output}]
        if spec.inputs == "tensor":
            data = [value for row in batch.lists() for value in row]
            matrix = {"name": "input-0", "shape": [batch.rows, len(batch.names)], "datatype": "FP64"}
            return {"inputs": [{**matrix, "data": data}], "outputs": outputs}
        inputs = []
        for name, column, datatype in zip(batch.names, batch.columns, batch.datatypes, strict=True):
            described: dict[str, Any] = {"name": name, "shape": [batch.rows, 1], "datatype": datatype}
            if datatype == "BYTES":
                described["parameters"] = {"content_type": "str"}
            inputs.append({**described, "data": column})
        return {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": outputs}

    def answer(self, payload: Any, spec: PredictorSpec, output: str, rows: int, width: int) -> np.ndarray:
        outputs = payload.get("outputs") if isinstance(payload, dict) else None
        if not isinstance(outputs, list):
            raise WrongAnswer("no outputs list")
        found = [o for o in outputs if isinstance(o, dict) and o.get("name") == output]
        if len(found) != 1:
            raise WrongAnswer(f"no output named {output}")
        shape, data = found[0].get("shape"), found[0].get("data")
        if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
            raise WrongAnswer(f"output {output} has no shape")
        if shape not in ([rows, width], [rows] if width == 1 else None):
            raise WrongAnswer(f"output {output} has shape {shape}; expected [{rows}, {width}]")
        if not isinstance(data, list) or len(data) != rows * width or not all(map(_is_number, data)):
            raise WrongAnswer(f"output {output} does not hold {rows * width} numbers")
        return _finite(np.asarray(data, dtype=float).reshape(rows, width))


PROTOCOLS: dict[str, WireProtocol] = {"v1": V1(), "v2": V2()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(matrix: np.ndarray) -> np.ndarray:
    if not np.isfinite(matrix).all():
        raise WrongAnswer("NaN or infinite values")
    return matrix


__all__ = ["PROTOCOLS", "Batch", "WireProtocol", "WrongAnswer"]

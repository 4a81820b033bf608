"""An OpenAPI example of a V2 request for the demo model ``loan`` (the path examples name it), so that
clients and fuzzers reach real inference and explanations: one input per feature, in the manifest's order."""

from __future__ import annotations

from typing import Any

from api.http.openapi_examples import LOAN_ROW


def _input(name: str, value: Any) -> dict[str, Any]:
    datatype = "BYTES" if isinstance(value, str) else "FP64"
    return {"name": name, "shape": [1], "datatype": datatype, "data": [value]}


LOAN_REQUEST = {"id": "example-1", "inputs": [_input(name, value) for name, value in LOAN_ROW.items()]}
LOAN_EXPLAIN_REQUEST = {**LOAN_REQUEST, "parameters": {"seed": 0}}

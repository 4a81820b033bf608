"""Candor's predictions and SHAP explanations as Open Inference Protocol output tensors (flat, row-major)."""

from __future__ import annotations

from typing import Any

import orjson

from model_store.errors import InvalidInput


def _tensor(name: str, datatype: str, shape: list[int], data: list[Any], **parameters: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape, "data": data}
    if parameters:
        tensor["parameters"] = parameters
    return tensor


def prediction_outputs(predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``label`` (BYTES [n]) and ``probabilities`` (FP64 [n, classes], the class order in its parameter
    ``classes`` as a JSON array), or ``value`` (FP64 [n]) for regression."""
    n = len(predictions)
    if "value" in predictions[0]:
        return [_tensor("value", "FP64", [n], [p["value"] for p in predictions])]
    classes = list(predictions[0].get("probabilities", {}))
    outputs = [_tensor("label", "BYTES", [n], [p["label"] for p in predictions])]
    if classes:
        values = [p["probabilities"][c] for p in predictions for c in classes]
        outputs.append(
            _tensor(
                "probabilities", "FP64", [n, len(classes)], values, classes=orjson.dumps(classes).decode()
            )
        )
    return outputs


def explanation_outputs(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """A columnar SHAP envelope as ``attributions`` (FP64 [n, features], the order in its parameter
    ``feature_order``), ``base_value`` and ``output_value`` (FP64 [n]), then the predictions' tensors."""
    results, order = envelope["results"], envelope["output"]["feature_order"]
    n = len(results)
    attributions = [value for result in results for value in result["attribution_values"]]
    return [
        _tensor(
            "attributions",
            "FP64",
            [n, len(order)],
            attributions,
            feature_order=orjson.dumps(order).decode(),
            output_space=envelope["output"]["space"],
        ),
        _tensor("base_value", "FP64", [n], [r["base_value"] for r in results]),
        _tensor("output_value", "FP64", [n], [r["output_value"] for r in results]),
        *prediction_outputs([r["prediction"] for r in results]),
    ]


def requested(outputs: list[dict[str, Any]], wanted: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The outputs the request names (all when it names none); an unknown name is a 422."""
    if not wanted:
        return outputs
    by_name = {tensor["name"]: tensor for tensor in outputs}
    for index, item in enumerate(wanted):
        if item["name"] not in by_name:
            known = ", ".join(by_name)
            raise InvalidInput.field(f"outputs.{index}.name", f"Unknown output; outputs are {known}.")
    return [by_name[item["name"]] for item in wanted]

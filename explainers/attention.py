"""Attention maps of transformer text classifiers: selected layers and heads, aggregated or rolled out.

Weights come from the model's own ``output_attentions`` (eager attention). Texts are run one at a time, so
no padding enters a matrix and each row is a distribution over the text's tokens. The size of the answer is
checked against the server's cap before the model runs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from explainers.base import Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

DEFAULT_MAX_VALUES = 2_000_000


def rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) over (layers, heads, T, T): per layer the head mean plus the
    residual identity, rows renormalised, multiplied from the first layer up. Rows sum to 1."""
    tokens = weights.shape[-1]
    result = np.eye(tokens)
    for layer in weights.astype(float):
        mixed = 0.5 * layer.mean(axis=0) + 0.5 * np.eye(tokens)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        result = mixed @ result
    return result


def _json(matrix: np.ndarray) -> np.ndarray:
    """float32 weights as one contiguous array: orjson writes them natively, in float32's shortest form."""
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _selection(requested: list[int] | None, available: int, field: str) -> list[int]:
    if requested is None:
        return list(range(available))
    bad = [i for i in requested if not 0 <= i < available]
    if bad or len(set(requested)) != len(requested):
        raise InvalidInput.field(field, f"Distinct indices from 0 to {available - 1}.")
    return list(requested)


class AttentionExplainer(Explainer):
    name = "attention"
    kind = "attention"

    def __init__(self, max_values: int = DEFAULT_MAX_VALUES) -> None:
        self.max_values = max_values

    def explain(
        self, info: VersionInfo, model: Any, instances: list[Any], options: dict[str, Any]
    ) -> Explanation:
        started = time.perf_counter()
        layers = _selection(options.get("layers"), model.n_layers, "layers")
        heads = _selection(options.get("heads"), model.n_heads, "heads")
        aggregate = options.get("aggregate") or "none"
        use_rollout = bool(options.get("rollout"))
        fmt = options.get("format") or "candor"
        if fmt == "bertviz" and aggregate != "none":
            raise InvalidInput.field("format", "bertviz shows individual heads; use aggregate none.")
        max_values = int(options.get("max_values") or self.max_values)
        items = model.validate(instances, truncate=bool(options.get("truncate")))
        per_matrix = len(layers) * (len(heads) if aggregate == "none" else 1) + (1 if use_rollout else 0)
        for index, item in enumerate(items):
            size = per_matrix * item.tokens**2
            if size > max_values:
                raise InvalidInput.field(
                    f"instances.{index}.text",
                    f"{len(layers)} layers x {len(heads)} heads x {item.tokens}^2 tokens = {size} weights; "
                    f"at most {max_values}. Select fewer layers or heads, or aggregate.",
                )
        results = [self._one(model, item, layers, heads, aggregate, use_rollout, fmt) for item in items]
        params = {
            "layers": layers,
            "heads": heads,
            "aggregate": aggregate,
            "rollout": use_rollout,
            "format": fmt,
            "truncate": bool(options.get("truncate")),
        }
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo(
                "attention", "eager_attention", params, library_versions("transformers", "torch")
            ),
            output={"space": "attention_weights", "rows_sum_to": 1.0},
            results=results,
            quality={"max_row_sum_error": max((r.pop("_row_error") for r in results), default=0.0)},
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3)},
        )

    @staticmethod
    def _one(
        model: Any,
        item: Any,
        layers: list[int],
        heads: list[int],
        aggregate: str,
        use_rollout: bool,
        fmt: str,
    ) -> dict[str, Any]:
        weights, probabilities = model.attentions(item)
        selected = weights[layers][:, heads]  # (layers, heads, T, T)
        tokens = model.token_strings(item)
        result: dict[str, Any] = {
            "prediction": model.describe_predictions(probabilities[None, :])[0],
            "tokens": [
                {"index": i, "token": t, "start": s, "end": e, "special": sp}
                for i, (t, (s, e), sp) in enumerate(zip(tokens, item.offsets, item.special, strict=True))
            ],
            "truncated": item.truncated,
            "original_tokens": item.original_tokens,
        }
        matrices = [selected]
        if fmt == "bertviz":
            result["bertviz"] = {
                "attention": [
                    {"name": None, "attn": _json(selected), "left_text": tokens, "right_text": tokens}
                ],
                "default_filter": "0",
                "include_layers": layers,
                "heads": heads,
            }
        elif aggregate == "none":
            result["attention"] = [
                {"layer": layer, "head": head, "weights": _json(selected[i, j])}
                for i, layer in enumerate(layers)
                for j, head in enumerate(heads)
            ]
        else:
            combined = selected.mean(axis=1) if aggregate == "mean" else selected.max(axis=1)
            if aggregate == "max":
                combined = combined / combined.sum(axis=-1, keepdims=True)  # a max over heads is renormalised
            matrices = [combined]
            result["attention"] = [
                {"layer": layer, "head": aggregate, "weights": _json(combined[i])}
                for i, layer in enumerate(layers)
            ]
        if use_rollout:
            rolled = rollout(weights[sorted(layers)][:, heads])  # rollout runs from the first layer up
            matrices.append(rolled)
            result["rollout"] = {"layers": layers, "heads": heads, "weights": _json(rolled)}
        result["_row_error"] = max(float(np.abs(m.astype(float).sum(axis=-1) - 1).max()) for m in matrices)
        return result

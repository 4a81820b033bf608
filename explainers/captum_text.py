"""Captum token attributions for text classifiers, merged into words with character offsets.

Integrated gradients (Captum's ``LayerIntegratedGradients``) on the model's input word embeddings,
explaining the softmax probability of the target label. The baseline keeps the special tokens and replaces
every other token by the pad (or mask) token. ``n_steps: "auto"`` doubles the steps until the convergence
delta is under the tolerance, the step cap or the time budget is reached, and says which.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from captum.attr import LayerIntegratedGradients

from explainers.base import NO_LIMITS, Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from explainers.rows import Rows, texts
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

AUTO_START_STEPS = 8
DEFAULT_STEPS = 50
MAX_STEPS = 1024
DEFAULT_TOLERANCE = 0.05
DEFAULT_BUDGET_MS = 20_000


def baseline_ids(model: Any, item: Any, kind: str) -> torch.Tensor:
    """The input with every non-special token replaced by the pad (or mask) token."""
    tokenizer = model.tokenizer
    token = tokenizer.pad_token_id if kind == "pad" else tokenizer.mask_token_id
    if token is None:
        raise InvalidInput.field("baseline", f"The tokenizer has no {kind} token.")
    ids = [i if special else token for i, special in zip(item.input_ids, item.special, strict=True)]
    return torch.tensor([ids], dtype=torch.long)


class TokenAttributions:
    """One model's probability function and Captum objects (built once per loaded version)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        layer = model.model.get_input_embeddings()
        self.integrated = LayerIntegratedGradients(self.forward, layer)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(
            self.model.model(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1
        )

    def integrated_gradients(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        base: torch.Tensor,
        target: int,
        steps: int,
        batch: int | None,
    ) -> tuple[torch.Tensor, float]:
        values, delta = self.integrated.attribute(
            inputs=ids,
            baselines=base,
            additional_forward_args=(mask,),
            target=target,
            n_steps=steps,
            internal_batch_size=batch,
            return_convergence_delta=True,
        )
        return values.sum(dim=-1)[0].detach(), float(delta.abs().max())


def merge_words(model: Any, item: Any, values: list[float]) -> tuple[list[dict[str, Any]], float]:
    """Token attributions summed per word (pieces of one word joined, with character offsets into the text);
    the special tokens' total is returned apart, so words + special = all tokens."""
    words: list[dict[str, Any]] = []
    special_total = 0.0
    last_word: int | None = None
    for index, (word, (start, end), special) in enumerate(
        zip(item.word_ids, item.offsets, item.special, strict=True)
    ):
        if special or word is None:
            special_total += values[index]
            last_word = None
            continue
        if word == last_word:
            entry = words[-1]
            entry["end"] = end
            entry["tokens"].append(index)
            entry["attribution"] += values[index]
        else:
            words.append({"start": start, "end": end, "tokens": [index], "attribution": values[index]})
        last_word = word
    for entry in words:
        entry["word"] = item.text[entry["start"] : entry["end"]]
    return words, special_total


class CaptumExplainer(Explainer):
    name = "attributions"
    kind = "token_attribution"

    def explain(
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        rows = texts(rows)
        started = time.perf_counter()
        method = options.get("method") or "integrated_gradients"
        baseline = options.get("baseline") or "pad"
        n_steps = options.get("n_steps") or DEFAULT_STEPS
        tolerance = float(options.get("tolerance") or DEFAULT_TOLERANCE)
        target_label = options.get("target")
        if target_label is not None and target_label not in model.classes:
            raise InvalidInput.field("target", f"Unknown label; labels are {', '.join(model.classes)}.")
        deadline = time.monotonic() + int(options.get("budget_ms") or DEFAULT_BUDGET_MS) / 1000
        items = rows.items
        engine = model.derived.get_or_load("captum", lambda: TokenAttributions(model))
        results, qualities = [], []
        for item in items:
            result, quality = self._one(
                model,
                engine,
                item,
                baseline,
                n_steps,
                tolerance,
                target_label,
                deadline,
                options,
            )
            results.append(result)
            qualities.append(quality)
        params = {
            "method": method,
            "layer": "input_embeddings",
            "output": "probability",
            "baseline": baseline,
            "n_steps": n_steps,
            "tolerance": tolerance if n_steps == "auto" else None,
            "internal_batch_size": options.get("internal_batch_size"),
            "truncate": bool(options.get("truncate")),
        }
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo("captum", method, params, library_versions("captum", "torch", "transformers")),
            output={
                "space": "probability",
                "target_rule": "requested" if target_label else "predicted_label",
            },
            results=results,
            quality={
                "convergence_delta": max(q["convergence_delta"] for q in qualities) if qualities else None,
                "per_instance": qualities,
            },
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3)},
        )

    @staticmethod
    def _one(
        model: Any,
        engine: TokenAttributions,
        item: Any,
        baseline: str,
        n_steps: Any,
        tolerance: float,
        target_label: str | None,
        deadline: float,
        options: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        ids, mask = model.tensors(item)
        with torch.no_grad():
            probabilities = engine.forward(ids, mask)[0].double().numpy()
        target = model.classes.index(target_label) if target_label else int(probabilities.argmax())
        quality: dict[str, Any] = {}
        base = baseline_ids(model, item, baseline)
        batch = options.get("internal_batch_size")
        if n_steps == "auto":
            values, delta, quality = _auto_steps(engine, ids, mask, base, target, batch, tolerance, deadline)
        else:
            values, delta = engine.integrated_gradients(ids, mask, base, target, int(n_steps), batch)
            quality["n_steps"] = int(n_steps)
        quality["convergence_delta"] = delta
        token_values = values.double().tolist()
        words, special_total = merge_words(model, item, token_values)
        tokens = model.token_strings(item)
        result = {
            "prediction": model.describe_predictions(probabilities[None, :])[0],
            "target": model.classes[target],
            "target_probability": float(probabilities[target]),
            "tokens": [
                {"index": i, "token": t, "start": s, "end": e, "special": sp, "attribution": v}
                for i, (t, (s, e), sp, v) in enumerate(
                    zip(tokens, item.offsets, item.special, token_values, strict=True)
                )
            ],
            "words": words,
            "special_tokens_attribution": special_total,
            "total_attribution": float(sum(token_values)),
            "truncated": item.truncated,
            "original_tokens": item.original_tokens,
        }
        return result, quality


def _auto_steps(
    engine: TokenAttributions,
    ids: torch.Tensor,
    mask: torch.Tensor,
    base: torch.Tensor,
    target: int,
    batch: int | None,
    tolerance: float,
    deadline: float,
) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """Double the steps from ``AUTO_START_STEPS`` until the delta is within ``tolerance`` (or cap/budget)."""
    steps = AUTO_START_STEPS
    while True:
        values, delta = engine.integrated_gradients(ids, mask, base, target, steps, batch)
        if delta <= tolerance:
            stopped = "tolerance"
        elif steps * 2 > MAX_STEPS:
            stopped = "max_steps"
        elif time.monotonic() > deadline:
            stopped = "budget"
        else:
            steps *= 2
            continue
        return values, delta, {"n_steps": steps, "auto": {"tolerance": tolerance, "stopped": stopped}}

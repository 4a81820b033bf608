"""A loaded Hugging Face text classifier: tokenisation with honest truncation, predictions, attentions.

Loaded from its verified version directory only: local files, safetensors, no remote code, and eager
attention (fused kernels never return attention weights). torch and transformers are imported here and
nowhere on the tabular path.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from model_store.cache import LoadedModelCache
from model_store.errors import InvalidInput
from model_store.manifest import Manifest

_THREADS_LOCK = threading.Lock()
transformers.logging.set_verbosity_error()  # load reports and length notices are not the client's business
transformers.logging.disable_progress_bar()


def set_torch_threads(threads: int) -> None:
    with _THREADS_LOCK:
        if threads > 0 and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One tokenised text."""

    text: str
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    word_ids: list[int | None]
    truncated: bool
    original_tokens: int

    @property
    def tokens(self) -> int:
        return len(self.input_ids)


class TextModel:
    """One version of a sequence classifier with its tokenizer and manifest."""

    flavour = "text"
    feature_order = ["text"]

    def __init__(self, manifest: Manifest, directory: Path) -> None:
        self.manifest = manifest
        self.tokenizer = AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
        if not getattr(self.tokenizer, "is_fast", False):
            raise InvalidInput.field("artifact", "a fast tokenizer (tokenizer.json) is required for offsets")
        self.model = AutoModelForSequenceClassification.from_pretrained(
            directory,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            attn_implementation="eager",
        )
        self.model.eval()
        self.classes: list[str] = list(manifest.classes or [])
        self.is_classifier = True
        self.max_tokens = int(manifest.max_tokens or self.tokenizer.model_max_length)
        self.derived: LoadedModelCache[Any] = LoadedModelCache(capacity=16)
        self._check_labels()

    def _check_labels(self) -> None:
        config = self.model.config
        labels = [config.id2label[i] for i in range(config.num_labels)]
        if labels != self.classes:
            raise InvalidInput.field(
                "classes", f"The model's id2label is {labels}; classes must match in order."
            )
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and self.max_tokens > limit:
            raise InvalidInput.field("max_tokens", f"The model has {limit} positions.")

    # -- inputs -------------------------------------------------------------------------------------------
    def validate(self, instances: Sequence[Any], truncate: bool = False) -> list[Encoded]:
        """``[{"text": str}]`` tokenised; too-long texts are refused unless ``truncate``."""
        errors: dict[str, list[str]] = {}
        encoded: list[Encoded] = []
        for index, row in enumerate(instances):
            field = f"instances.{index}"
            if not isinstance(row, dict) or set(row) != {"text"}:
                errors[field] = ['Expected {"text": "..."}.']
                continue
            text = row["text"]
            if not isinstance(text, str) or not text.strip():
                errors[f"{field}.text"] = ["Expected a non-empty string."]
                continue
            item = self.encode(text, truncate)
            if item.truncated and not truncate:
                errors[f"{field}.text"] = [
                    f"{item.original_tokens} tokens; the model reads at most {self.max_tokens}. "
                    "Send truncate: true to cut the text."
                ]
                continue
            encoded.append(item)
        if errors:
            raise InvalidInput("Some instances are not texts this model can read.", errors)
        return encoded

    def encode(self, text: str, truncate: bool) -> Encoded:
        full = self.tokenizer(
            text, truncation=False, return_offsets_mapping=True, return_special_tokens_mask=True
        )
        original = len(full["input_ids"])
        if original > self.max_tokens:
            if not truncate:
                return Encoded(text, [], [], [], [], True, original)
            full = self.tokenizer(
                text,
                truncation=True,
                max_length=self.max_tokens,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
            )
        return Encoded(
            text=text,
            input_ids=list(full["input_ids"]),
            offsets=[tuple(o) for o in full["offset_mapping"]],
            special=[bool(s) for s in full["special_tokens_mask"]],
            word_ids=list(full.word_ids()),
            truncated=original > self.max_tokens,
            original_tokens=original,
        )

    def token_strings(self, item: Encoded) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens(item.input_ids))

    # -- outputs ------------------------------------------------------------------------------------------
    def tensors(self, item: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([item.input_ids], dtype=torch.long)
        return ids, torch.ones_like(ids)

    def probabilities(self, items: Sequence[Encoded]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for item in items:
                ids, mask = self.tensors(item)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                out.append(torch.softmax(logits, dim=-1)[0].double().numpy())
        return np.array(out)

    def attentions(self, item: Encoded) -> tuple[np.ndarray, np.ndarray]:
        """(layers, heads, tokens, tokens) attention weights (float32, as computed) and the probabilities."""
        ids, mask = self.tensors(item)
        with torch.inference_mode():
            output = self.model(input_ids=ids, attention_mask=mask, output_attentions=True)
        weights = torch.stack([a[0] for a in output.attentions]).numpy()
        return weights, torch.softmax(output.logits, dim=-1)[0].double().numpy()

    def predictions(self, items: Sequence[Encoded]) -> list[dict[str, Any]]:
        """Label and probabilities per text; a truncated text says so, with its original token count."""
        out = self.describe_predictions(self.probabilities(items))
        for prediction, item in zip(out, items, strict=True):
            if item.truncated:
                prediction.update(truncated=True, original_tokens=item.original_tokens)
        return out

    def describe_predictions(self, probabilities: np.ndarray) -> list[dict[str, Any]]:
        labels = [self.classes[i] for i in probabilities.argmax(axis=1)]
        return [
            {"label": label, "probabilities": dict(zip(self.classes, row, strict=True))}
            for label, row in zip(labels, probabilities.tolist(), strict=True)
        ]

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

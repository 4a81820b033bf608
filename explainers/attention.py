"""Attention maps of transformer text classifiers: selected layers and heads, aggregated or rolled out.

Weights come from the model's own ``output_attentions`` (eager attention). Texts are run one at a time, so
no padding enters a matrix and each row is a distribution over the text's tokens. The size of the answer is
checked against the server's cap before the model runs.

Every weights array leaves either as JSON numbers (float32 in its shortest form, the default), with
``encoding: "base64"`` as ``{"dtype", "shape", "byte_order": "little", "data"}``: the base64 of the array's
little-endian float32 or float16 bytes in C order, which ``numpy.frombuffer`` reads back (KServe V2's binary
tensor idea, kept inside the JSON envelope), or with ``encoding: "safetensors"`` as a tensor of a safetensors
answer (``safetensors_body``): the envelope goes in its ``__metadata__``, each array replaced by its tensor's
name. ``quality.max_row_sum_error`` is measured on the values as sent.
"""

from __future__ import annotations

import binascii
import dataclasses
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from explainers import bertviz_view
from explainers.base import NO_LIMITS, Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from explainers.rows import Rows, TextRows
from model_store.audit_blobs import EncodedArray, arrays_replaced, little_endian
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

DEFAULT_MAX_VALUES = 2_000_000
ENCODINGS = ("json", "base64", "safetensors")
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16"}
DTYPES = ("float32", "float16")


def rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) over (layers, heads, T, T): per layer the head mean plus the
    residual identity, rows renormalised, multiplied from the first layer up. Rows sum to 1."""
    tokens = weights.shape[-1]
    result = np.eye(tokens)
    for layer in weights:
        mixed = 0.5 * layer.mean(axis=0, dtype=np.float64) + 0.5 * np.eye(tokens)
        mixed /= mixed.sum(axis=-1, keepdims=True)
        result = mixed @ result
    return result


def row_sum_error(matrices: np.ndarray) -> float:
    """Largest |sum of a row - 1| over the last axis, without a copy of the matrices: float32 values summed
    in float64 (numpy: ~2x faster than torch here), float16 values in float32 (torch; exact to far below
    float16's own rounding, which is what the figure then measures)."""
    if matrices.dtype == np.float16:
        sums = torch.from_numpy(matrices).sum(dim=-1, dtype=torch.float32)
        return float((sums - 1).abs().max())
    return float(np.abs(matrices.sum(axis=-1, dtype=np.float64) - 1).max())


@dataclasses.dataclass(frozen=True)
class WeightsCodec:
    """How weights leave the server: ``json`` numbers (float32) or ``base64`` of float32 or float16 bytes."""

    encoding: str = "json"
    dtype: str = "float32"

    @classmethod
    def from_options(cls, options: dict[str, Any], fmt: str) -> WeightsCodec:
        encoding = options.get("encoding") or "json"
        dtype = options.get("dtype") or "float32"
        if encoding not in ENCODINGS:
            raise InvalidInput.field("encoding", f"One of {', '.join(ENCODINGS)}.")
        if dtype not in DTYPES:
            raise InvalidInput.field("dtype", f"One of {', '.join(DTYPES)}.")
        if encoding == "json" and dtype != "float32":
            raise InvalidInput.field(
                "dtype", f"{dtype} needs encoding base64 or safetensors; JSON numbers are float32."
            )
        if fmt == "bertviz" and encoding != "json":
            raise InvalidInput.field("encoding", "bertviz's viewer reads JSON numbers; use encoding json.")
        return cls(encoding, dtype)

    def cast(self, array: np.ndarray) -> np.ndarray:
        """The values as they will be sent: a C-contiguous array of the wire dtype (native byte order)."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self.dtype == "float16":  # torch rounds to nearest even like numpy, ~30x faster on this CPU
            return torch.from_numpy(array).to(torch.float16).numpy()
        return array

    def encode(self, array: np.ndarray) -> Any:
        """One array from ``cast`` as the client receives it: the array itself for JSON numbers (orjson
        writes float32 arrays natively) and for safetensors (written by ``safetensors_body``)."""
        if self.encoding != "base64":
            return array
        little = little_endian(array)
        return EncodedArray(
            little,
            dtype=self.dtype,
            shape=list(little.shape),
            byte_order="little",
            data=binascii.b2a_base64(little.data, newline=False).decode("ascii"),
        )


def as_sent(envelope: dict[str, Any]) -> dict[str, Any]:
    """A recorded attention envelope whose weights were read back as arrays, with each array encoded as its
    request asked (``encoding``, ``dtype``), so it is sent again as it was sent first."""
    params = envelope["method"]["params"]
    codec = WeightsCodec(params.get("encoding") or "json", params.get("dtype") or "float32")
    return arrays_replaced(envelope, lambda array, _path: codec.encode(array))


def safetensors_body(envelope: dict[str, Any], dumps: Callable[[Any], bytes]) -> bytes:
    """The envelope as one safetensors file: each weights array a tensor named by its place, the envelope
    (arrays replaced by those names, serialised with ``dumps``) in ``__metadata__["explanation"]``. Written
    here rather than by ``safetensors.numpy.save``, which copies every array twice."""
    header: dict[str, Any] = {}
    buffers: list[memoryview] = []
    offset = 0

    def name(array: np.ndarray, path: str) -> str:
        nonlocal offset
        little = little_endian(array)
        data = little.data.cast("B")
        header[path] = {
            "dtype": SAFETENSORS_DTYPES[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        buffers.append(data)
        offset += data.nbytes
        return path

    described = arrays_replaced(envelope, name)
    header["__metadata__"] = {"format": "candor-explanation", "explanation": dumps(described).decode()}
    text = dumps(header)
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text, *buffers])


@dataclasses.dataclass(frozen=True)
class Selection:
    """What one request asks of every text."""

    layers: list[int]
    heads: list[int]
    aggregate: str
    rollout: bool
    fmt: str
    codec: WeightsCodec

    def values_per_token_pair(self) -> int:
        per_layer = len(self.heads) if self.aggregate == "none" else 1
        return len(self.layers) * per_layer + (1 if self.rollout else 0)

    def pick(self, weights: np.ndarray) -> np.ndarray:
        """(layers, heads, T, T) in the requested order; no copy when everything is asked in order."""
        if self.layers == list(range(weights.shape[0])) and self.heads == list(range(weights.shape[1])):
            return weights
        return weights[np.ix_(self.layers, self.heads)]


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
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        assert isinstance(rows, TextRows)
        started = time.perf_counter()
        sel = self._parse(model, options)
        items = rows.items
        self._check_size(items, sel, int(limits.get("max_values") or self.max_values))
        timing = {"forward": 0.0, "weights": 0.0}
        results = [self._one(model, item, sel, timing) for item in items]
        params = {
            "layers": sel.layers,
            "heads": sel.heads,
            "aggregate": sel.aggregate,
            "rollout": sel.rollout,
            "format": sel.fmt,
            "encoding": sel.codec.encoding,
            "dtype": sel.codec.dtype,
            "truncate": bool(options.get("truncate")),
        }
        timing_ms = {k: round(v * 1000, 3) for k, v in timing.items()}
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo(
                "attention", "eager_attention", params, library_versions("transformers", "torch")
            ),
            output={"space": "attention_weights", "rows_sum_to": 1.0},
            results=results,
            quality={"max_row_sum_error": max((r.pop("_row_error") for r in results), default=0.0)},
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3), **timing_ms},
        )

    @staticmethod
    def _parse(model: Any, options: dict[str, Any]) -> Selection:
        """Every option checked, and every combination refused, before anything runs."""
        aggregate = options.get("aggregate") or "none"
        fmt = options.get("format") or "candor"
        if fmt == "bertviz" and aggregate != "none":
            raise InvalidInput.field("format", "bertviz shows individual heads; use aggregate none.")
        return Selection(
            layers=_selection(options.get("layers"), model.n_layers, "layers"),
            heads=_selection(options.get("heads"), model.n_heads, "heads"),
            aggregate=aggregate,
            rollout=bool(options.get("rollout")),
            fmt=fmt,
            codec=WeightsCodec.from_options(options, fmt),
        )

    @staticmethod
    def _check_size(items: list[Any], sel: Selection, max_values: int) -> None:
        for index, item in enumerate(items):
            size = sel.values_per_token_pair() * item.tokens**2
            if size > max_values:
                raise InvalidInput.field(
                    f"instances.{index}.text",
                    f"{len(sel.layers)} layers x {len(sel.heads)} heads x {item.tokens}^2 tokens = {size} "
                    f"weights; at most {max_values}. Select fewer layers or heads, or aggregate.",
                )

    @staticmethod
    def _one(model: Any, item: Any, sel: Selection, timing: dict[str, float]) -> dict[str, Any]:
        started = time.perf_counter()
        weights, probabilities = model.attentions(item)
        timing["forward"] += time.perf_counter() - started
        started = time.perf_counter()
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
        errors = _weights(result, weights, tokens, sel)
        result["_row_error"] = max(errors)
        timing["weights"] += time.perf_counter() - started
        return result


def _weights(result: dict[str, Any], weights: np.ndarray, tokens: list[str], sel: Selection) -> list[float]:
    """Fill ``result`` with the selected matrices as sent; returns each sent array's row-sum error."""
    codec = sel.codec
    selected = sel.pick(weights)
    if sel.fmt == "bertviz" or sel.aggregate == "none":
        sent = codec.cast(selected)
    else:
        combined = selected.mean(axis=1) if sel.aggregate == "mean" else selected.max(axis=1)
        if sel.aggregate == "max":
            combined = combined / combined.sum(axis=-1, keepdims=True)  # a max over heads is renormalised
        sent = codec.cast(combined)
    if sel.fmt == "bertviz":
        result["bertviz"] = bertviz_view.params(sent, tokens, sel.layers, sel.heads)
    elif sel.aggregate == "none":
        result["attention"] = [
            {"layer": layer, "head": head, "weights": codec.encode(sent[i, j])}
            for i, layer in enumerate(sel.layers)
            for j, head in enumerate(sel.heads)
        ]
    else:
        result["attention"] = [
            {"layer": layer, "head": sel.aggregate, "weights": codec.encode(sent[i])}
            for i, layer in enumerate(sel.layers)
        ]
    errors = [row_sum_error(sent)]
    if sel.rollout:  # rollout runs from the first layer up, whatever the requested order
        rolled = codec.cast(rollout(weights[np.ix_(sorted(sel.layers), sel.heads)]))
        result["rollout"] = {"layers": sel.layers, "heads": sel.heads, "weights": codec.encode(rolled)}
        errors.append(row_sum_error(rolled))
    return errors

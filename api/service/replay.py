"""Replaying a recorded explanation: recompute it with the recorded version, options and seed; compare."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from api.methods.registry import spec
from api.service.jsonbytes import dumps_bytes
from model_store import array_codec
from model_store.audit import canonical_json, sha256_hex
from model_store.errors import InvalidInput, NotFound

VOLATILE = ("id", "created_at", "timing_ms")
"""Envelope fields that differ between two runs of the same explanation by design."""
VOLATILE_ANYWHERE = frozenset({"elapsed_ms"})
"""Keys at any depth that are wall-clock measurements (e.g. a counterfactual search's elapsed time)."""
MAX_LISTED = 20
BlobLoader = Callable[[str], bytes | None]


def replay_request(record: dict[str, Any], instances: list[Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """The recorded request's instances and options. A record that kept only the instances' hash needs them
    sent again, and they must hash to what was recorded (a request that sent none, drawing its rows from the
    reference data, replays with none)."""
    request = record["request"]
    if "instances" in request:
        return request["instances"], request["options"]
    if request.get("instance_count") == 0:
        return [], request["options"]
    if instances is None:
        raise InvalidInput.field(
            "instances", "This record kept only the inputs' sha256 (store_inputs: hash); send the instances."
        )
    if sha256_hex(canonical_json(instances)) != request["instances_sha256"]:
        raise InvalidInput.field("instances", "These instances do not match the recorded sha256.")
    return instances, request["options"]


def compare(
    recorded: dict[str, Any], replayed: dict[str, Any], kind: str, blobs: BlobLoader | None = None
) -> dict[str, Any]:
    """Structural and numeric comparison of two envelopes, volatile fields left out. Weights arrays are
    compared as decoded arrays on both sides, whatever their form: JSON numbers, base64 objects, or blob
    references of the record (read with ``blobs``). A digest-only reference (``"kept": false``) is
    compared by its sha256, dtype and shape: equal or not, no measurable difference (``by_digest``)."""
    arrays: list[np.ndarray] = []

    def keep(array: np.ndarray, _path: str) -> Any:
        if array.dtype.kind not in "fiu":
            return array.tolist()  # not numbers: compared as JSON, as before
        arrays.append(array)
        return {ARRAY_MARK: len(arrays) - 1}

    left = {k: v for k, v in _decoded(columnar_groups_once(recorded), blobs).items() if k not in VOLATILE}
    right = {
        k: _decoded(v, None, arrays)
        for k, v in orjson.loads(dumps_bytes(array_codec.arrays_replaced(replayed, keep))).items()
        if k not in VOLATILE
    }
    differences: list[str] = []
    not_recorded: list[str] = []
    digests: list[tuple[str, bool]] = []
    max_diff = _walk(left, right, "", Found(differences, not_recorded, digests))
    tolerance = spec(kind).replay_tolerance  # stated per method: 1e-9 unless it says otherwise
    outcome = {
        "identical": not differences and max_diff == 0.0,
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "within_tolerance": not differences and max_diff <= tolerance,
        "differences": differences[:MAX_LISTED],
        "not_recorded": not_recorded[:MAX_LISTED],
    }
    if digests:
        differing = [path for path, equal in digests if not equal]
        outcome["by_digest"] = {"compared": len(digests), "differing": differing[:MAX_LISTED]}
    return outcome


def columnar_groups_once(envelope: dict[str, Any]) -> dict[str, Any]:
    """A columnar SHAP envelope recorded before its groups moved to ``output.groups`` (each row carried
    ``groups``: ``[{group, features, attribution}]``) in today's form, so a replay compares its numbers."""
    output, results = envelope.get("output"), envelope.get("results")
    if not isinstance(output, dict) or "feature_order" not in output or "groups" in output:
        return envelope
    if not isinstance(results, list) or not results or not all("groups" in r for r in results):
        return envelope
    definitions = [{"group": g["group"], "features": g["features"]} for g in results[0]["groups"]]
    rows = [
        {
            **{k: v for k, v in r.items() if k != "groups"},
            "group_attribution_values": [g["attribution"] for g in r["groups"]],
        }
        for r in results
    ]
    return {**envelope, "output": {**output, "groups": definitions}, "results": rows}


class Found:
    """What a comparison finds besides the largest difference: paths that differ, paths only the replay
    has, and each digest-only array compared (its path, whether it matched)."""

    def __init__(
        self, differences: list[str], not_recorded: list[str], digests: list[tuple[str, bool]]
    ) -> None:
        self.differences, self.not_recorded, self.digests = differences, not_recorded, digests


ARRAY_MARK = "\x00array"
"""Stands for an array of the replayed envelope while the rest of it goes through JSON."""


class Decoded:
    """A weights array decoded from its sent or recorded form."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


class Digest:
    """A weights array a record keeps by digest only: its reference."""

    def __init__(self, ref: dict[str, Any]) -> None:
        self.ref = ref


def _decoded(value: Any, blobs: BlobLoader | None, arrays: list[np.ndarray] | None = None) -> Any:
    """``value`` with every blob reference, base64 weights object and replayed array as a ``Decoded``."""
    if isinstance(value, dict):
        if arrays is not None and set(value) == {ARRAY_MARK}:
            return Decoded(arrays[value[ARRAY_MARK]])
        if array_codec.is_reference(value) and not array_codec.is_kept(value):
            return Digest(value)
        if array_codec.is_reference(value):
            sha = value[array_codec.REF_KEY]
            data = blobs(sha) if blobs is not None else None
            if data is None:
                raise NotFound(f"The record's blob {sha} is missing.")
            return Decoded(array_codec.array_of(value, data))
        if array_codec.is_base64_object(value):
            try:
                return Decoded(array_codec.from_base64(value))
            except ValueError:
                return value  # not a weights object after all: compared as it is
        return {k: _decoded(v, blobs, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decoded(v, blobs, arrays) for v in value]
    return value


def _arrays_diff(a: Any, b: Any, path: str, differences: list[str]) -> float:
    """Two weights arrays (either side may be JSON numbers): their largest difference, or a difference of
    shape or finiteness listed."""
    # JSON numbers read back in the other side's dtype: float32 sent as its shortest decimal form reads back
    # to the very float32
    dtype = (a if isinstance(a, Decoded) else b).array.dtype
    try:
        left = a.array if isinstance(a, Decoded) else array_codec.decode(a, dtype)
        right = b.array if isinstance(b, Decoded) else array_codec.decode(b, dtype)
    except (TypeError, ValueError):
        differences.append(path or "/")
        return 0.0
    if left.shape != right.shape or not (np.isfinite(left).all() and np.isfinite(right).all()):
        differences.append(path or "/")
        return 0.0
    if left.size == 0:
        return 0.0
    return float(np.max(np.abs(left.astype(np.float64) - right.astype(np.float64))))


def _walk(a: Any, b: Any, path: str, found: Found) -> float:
    """The largest numeric difference of recorded ``a`` and replayed ``b``; non-numeric mismatches go to
    ``found.differences``. Keys only the replay has (fields a later service version adds, such as OOD flags
    on a record made before them) go to ``found.not_recorded``: nothing recorded is contradicted by them."""
    if isinstance(a, Digest):
        equal = isinstance(b, Decoded) and array_codec.matches(a.ref, b.array)
        found.digests.append((path, equal))
        if not equal:
            found.differences.append(path)
        return 0.0
    if isinstance(a, Decoded) or isinstance(b, Decoded):
        return _arrays_diff(a, b, path, found.differences)
    if _is_number(a) and _is_number(b):
        if a == b:
            return 0.0
        if math.isfinite(a) and math.isfinite(b):
            return abs(float(a) - float(b))
        found.differences.append(path or "/")
        return 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        worst = 0.0
        for key in sorted((set(a) | set(b)) - VOLATILE_ANYWHERE):
            if key not in a:
                found.not_recorded.append(f"{path}/{key}")
            elif key not in b:
                found.differences.append(f"{path}/{key}")
            else:
                worst = max(worst, _walk(a[key], b[key], f"{path}/{key}", found))
        return worst
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            found.differences.append(path or "/")
            return 0.0
        worst = 0.0
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            worst = max(worst, _walk(x, y, f"{path}/{index}", found))
        return worst
    if a != b:
        found.differences.append(path or "/")
    return 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

"""Replaying a recorded explanation: recompute it with the recorded version, options and seed; compare."""

from __future__ import annotations

import math
from typing import Any

import orjson

from api.jsonio import dumps_bytes
from model_store.audit import canonical_json, sha256_hex
from model_store.errors import InvalidInput

VOLATILE = ("id", "created_at", "timing_ms")
"""Envelope fields that differ between two runs of the same explanation by design."""
VOLATILE_ANYWHERE = frozenset({"elapsed_ms"})
"""Keys at any depth that are wall-clock measurements (e.g. a counterfactual search's elapsed time)."""
TOLERANCE = {"attributions": 1e-5, "attention": 1e-6}
"""Stated numeric tolerance per kind; every other kind is expected to replay to 1e-9 (seeded or exact)."""
DEFAULT_TOLERANCE = 1e-9
MAX_LISTED = 20


def replay_request(record: dict[str, Any], instances: list[Any] | None) -> tuple[list[Any], dict[str, Any]]:
    """The recorded request's instances and options. A record that kept only the instances' hash needs them
    sent again, and they must hash to what was recorded."""
    request = record["request"]
    if "instances" in request:
        return request["instances"], request["options"]
    if instances is None:
        raise InvalidInput.field(
            "instances", "This record kept only the inputs' sha256 (store_inputs: hash); send the instances."
        )
    if sha256_hex(canonical_json(instances)) != request["instances_sha256"]:
        raise InvalidInput.field("instances", "These instances do not match the recorded sha256.")
    return instances, request["options"]


def compare(recorded: dict[str, Any], replayed: dict[str, Any], kind: str) -> dict[str, Any]:
    """Structural and numeric comparison of two envelopes, volatile fields left out."""
    left = {k: v for k, v in recorded.items() if k not in VOLATILE}
    right = {k: v for k, v in orjson.loads(dumps_bytes(replayed)).items() if k not in VOLATILE}
    differences: list[str] = []
    max_diff = _walk(left, right, "", differences)
    tolerance = TOLERANCE.get(kind, DEFAULT_TOLERANCE)
    return {
        "identical": not differences and max_diff == 0.0,
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "within_tolerance": not differences and max_diff <= tolerance,
        "differences": differences[:MAX_LISTED],
    }


def _walk(a: Any, b: Any, path: str, differences: list[str]) -> float:
    """The largest numeric difference of ``a`` and ``b``; non-numeric mismatches go to ``differences``."""
    if _is_number(a) and _is_number(b):
        if a == b:
            return 0.0
        if math.isfinite(a) and math.isfinite(b):
            return abs(float(a) - float(b))
        differences.append(path or "/")
        return 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        worst = 0.0
        for key in sorted((set(a) | set(b)) - VOLATILE_ANYWHERE):
            if key not in a or key not in b:
                differences.append(f"{path}/{key}")
                continue
            worst = max(worst, _walk(a[key], b[key], f"{path}/{key}", differences))
        return worst
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            differences.append(path or "/")
            return 0.0
        worst = 0.0
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            worst = max(worst, _walk(x, y, f"{path}/{index}", differences))
        return worst
    if a != b:
        differences.append(path or "/")
    return 0.0


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

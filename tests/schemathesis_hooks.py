"""schemathesis hooks (``SCHEMATHESIS_HOOKS=schemathesis_hooks``) that make most positive cases of the compute
routes real requests: the demo model's name in the path and rows drawn from its reference data (written by
``test_schemathesis.py`` to ``$CANDOR_FUZZ_ROWS``), so fuzzing reaches every explanation method (the
registry's) and jobs instead of stopping at 404 (no such model) or 422 (no such feature).

Negative cases are left alone (the server must still refuse them), and one positive case in four too
(random values must still be answered within the contract). The choice is a function of the case, so a seed
replays."""

from __future__ import annotations

import json
import os
import random
import zlib
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis import GenerationMode

from api.methods.registry import specs

VERSION = "/v1/models/{name}/versions/{version}"
TEXT_ROUTES = tuple(f"{VERSION}{spec.path}" for spec in specs() if spec.flavour == "text")
TABULAR_ROUTES = (
    f"{VERSION}/predict",
    *(f"{VERSION}{spec.path}" for spec in specs() if spec.flavour == "tabular"),
    "/v1/models/{name}:predict",
    "/v1/models/{name}:explain",
)
NAMED_OPTIONS = (
    "target",
    "desired_class",
    "desired_range",
    "permitted_range",
    "layers",
    "heads",
    "attributes",
    "bins",
    "outcomes",
)
"""Options whose random values name no class, feature, layer or head of the model: dropped when rewritten."""
_ROWS: dict[str, Any] = {}


def _pool() -> dict[str, Any]:
    if not _ROWS:
        _ROWS.update(json.loads(Path(os.environ["CANDOR_FUZZ_ROWS"]).read_text(encoding="utf-8")))
    return _ROWS


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    path = case.operation.path
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE or not isinstance(case.body, dict):
        return case
    rng = random.Random(zlib.crc32(repr((path, case.body, case.query)).encode()))
    if rng.random() < 0.25:
        return case
    if path in TABULAR_ROUTES or path in TEXT_ROUTES:
        _make_real(case, path, rng)
    elif path == "/v1/jobs" and case.media_type == "application/json":
        case.body.update(model="loan", version="production", dataset="reference", options={})
    return case


def _make_real(case: Any, path: str, rng: random.Random) -> None:
    pool = _pool()
    name = pool["text_model"] if path in TEXT_ROUTES else rng.choice(sorted(pool["tabular"]))
    case.path_parameters = {**(case.path_parameters or {}), "name": name}
    if "version" in case.path_parameters:
        case.path_parameters["version"] = "production"
    count = max(1, len(case.body.get("instances") or [1]))
    if path in TEXT_ROUTES:
        case.body["instances"] = [{"text": rng.choice(pool["texts"])} for _ in range(count)]
    else:
        model = pool["tabular"][name]
        case.body["instances"] = [rng.choice(model["rows"]) for _ in range(count)]
        if "features" in case.body:  # feature effects: features of the model
            names = sorted(model["rows"][0])
            case.body["features"] = rng.sample(names, rng.randint(1, min(3, len(names))))
        if "features_to_vary" in case.body and not model["mutable"]:
            del case.body["features_to_vary"]
        elif "features_to_vary" in case.body:
            size = rng.randint(1, len(model["mutable"]))
            case.body["features_to_vary"] = rng.sample(model["mutable"], size)
    for option in NAMED_OPTIONS:
        case.body.pop(option, None)
    for option, cap in pool["caps"].items():  # the server's caps, below the contract's ranges
        if isinstance(case.body.get(option), int) and case.body[option] > cap:
            case.body[option] = cap

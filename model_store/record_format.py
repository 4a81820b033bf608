"""Version 2 records: the envelope held once, what many records share stored once by digest.

A record's full content (what ``GET /v1/explanations/{id}`` returns, as version 1 stored it whole) repeats
the envelope's params, quality and library versions beside it, and every record of a model repeats its
reference. ``compact`` turns that content into the stored form: the explanation envelope once, without its
params and library versions, and ``parts`` (model reference, params, library versions, request options)
each stored once under the sha256 of its canonical JSON and named by that digest. ``expand`` is its exact
inverse: ``expand(*compact(content)) == content`` for every content ``compact`` accepts.
"""

from __future__ import annotations

from typing import Any

SCHEMA_VERSION = "2.0"
PART_NAMES = ("model", "params", "libraries", "options", "ood")
DERIVED = ("method", "params", "seed", "reference_sha256", "quality", "library_versions")
"""Top-level fields of the full content that are copies of the envelope or the model part."""


def compact(content: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored content and its parts (name -> value) of a record's full content."""
    envelope = dict(content["explanation"])
    method = dict(envelope["method"])
    parts = {
        "model": content["model"],
        "params": method.pop("params"),
        "libraries": method.pop("library_versions"),
        "options": content["request"]["options"],
    }
    envelope["method"] = method
    quality = envelope.get("quality")
    if isinstance(quality, dict) and isinstance(quality.get("ood"), dict):  # the same for a version's records
        quality = dict(quality)
        parts["ood"] = quality.pop("ood")
        envelope["quality"] = quality
    request = {key: value for key, value in content["request"].items() if key != "options"}
    stored = {
        key: value
        for key, value in content.items()
        if key not in DERIVED and key not in ("model", "explanation", "request")
    }
    stored.update(record_schema_version=SCHEMA_VERSION, request=request, explanation=envelope)
    return stored, parts


def expand(stored: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    """The full content of a stored version 2 record, given its parts' values by name."""
    envelope = dict(stored["explanation"])
    method = {**envelope["method"], "params": parts["params"], "library_versions": parts["libraries"]}
    envelope["method"] = method
    if "ood" in parts:
        envelope["quality"] = {**envelope["quality"], "ood": parts["ood"]}
    content = {key: value for key, value in stored.items() if key != "parts"}
    content.update(
        model=parts["model"],
        request={"options": parts["options"], **stored["request"]},
        explanation=envelope,
        method={"name": method["name"], "algorithm": method["algorithm"]},
        params=parts["params"],
        seed=parts["params"].get("seed"),
        reference_sha256=parts["model"].get("reference_sha256"),
        quality=envelope["quality"],
        library_versions=parts["libraries"],
    )
    return content

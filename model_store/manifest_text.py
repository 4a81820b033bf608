"""Manifest text (YAML, or JSON, which is YAML) to plain data, refusing documents that cost far more to build
than their size.

The text is first read as a stream of parser events, which costs time and memory in proportion to its length,
and refused on the first anchor or alias (an alias repeats a whole subtree, so a few hundred bytes of nested
aliases expand to gigabytes: "billion laughs") or the first level of nesting past ``MAX_DEPTH`` (building the
document recurses once per level). Only a document that passes is built.
"""

from __future__ import annotations

from typing import Any

import yaml

from model_store.errors import InvalidManifest

MAX_MANIFEST_CHARS = 1_000_000
"""Longest manifest text accepted."""
MAX_DEPTH = 20
"""Deepest nesting of lists and mappings (a manifest needs 5: features, a feature, its categories)."""

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_OPENING = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSING = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def load_manifest_data(text: str, field: str = "manifest") -> Any:
    """The document in ``text`` as plain data, or ``InvalidManifest`` naming ``field``."""
    if len(text) > MAX_MANIFEST_CHARS:
        raise InvalidManifest.field(field, f"longer than {MAX_MANIFEST_CHARS} characters")
    try:
        _check_events(text, field)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader, checked above
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml's own bound (1,000), met first
            raise InvalidManifest.field(field, _TOO_DEEP) from exc
        raise InvalidManifest.field(field, "not valid YAML or JSON") from exc
    except ValueError as exc:  # an impossible date, an integer of more than 4,300 digits
        raise InvalidManifest.field(field, "holds a value YAML cannot represent (date or number)") from exc


def _check_events(text: str, field: str) -> None:
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise InvalidManifest.field(field, "YAML anchors and aliases (& and *) are not accepted")
        if isinstance(event, _OPENING):
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidManifest.field(field, _TOO_DEEP)
        elif isinstance(event, _CLOSING):
            depth -= 1

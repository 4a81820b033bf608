"""Every explanation method, one line each: name -> the module declaring its ``SPEC``."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from api.methods.spec import MethodSpec
from model_store.errors import InvalidInput

MODULES: dict[str, str] = {
    "shap": "api.methods.shap",
    "counterfactuals": "api.methods.counterfactuals",
    "reasons": "api.methods.reasons",
    "attention": "api.methods.attention",
    "attributions": "api.methods.attributions",
    "effects": "api.methods.effects",
    "fairness": "api.methods.fairness",
}
NAMES = tuple(MODULES)


@cache
def spec(name: str) -> MethodSpec:
    """The spec of method ``name`` (KeyError for an unknown name: callers validate names first)."""
    declared: MethodSpec = importlib.import_module(MODULES[name]).SPEC
    if declared.name != name:
        raise ValueError(f"{MODULES[name]} declares the method {declared.name!r}, listed as {name!r}.")
    return declared


def specs() -> list[MethodSpec]:
    return [spec(name) for name in NAMES]


def known(name: str, field: str = "method") -> MethodSpec:
    """The spec of ``name``, or a 422 naming ``field``."""
    if name not in MODULES:
        raise InvalidInput.field(field, f"One of {', '.join(NAMES)}.")
    return spec(name)


def methods_for(model: Any) -> list[str]:
    """Names of the methods that apply to a loaded model."""
    return [s.name for s in specs() if s.applies(model)]


def by_envelope_kind(kind: str) -> MethodSpec | None:
    """The method whose envelopes are of ``kind`` (None for none)."""
    return next((s for s in specs() if s.envelope_kind == kind), None)

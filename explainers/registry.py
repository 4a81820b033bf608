"""Method name -> adapter class and the model flavour it explains, imported lazily: a tabular request never
imports torch, captum or transformers."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from explainers.base import Explainer

ADAPTERS: dict[str, tuple[str, str]] = {
    "shap": ("explainers.shap_tabular:ShapExplainer", "tabular"),
    "counterfactuals": ("explainers.counterfactuals.explainer:CounterfactualExplainer", "tabular"),
    "reasons": ("explainers.reasons:ReasonsExplainer", "tabular"),
    "attention": ("explainers.attention:AttentionExplainer", "text"),
    "attributions": ("explainers.captum_text:CaptumExplainer", "text"),
}


@cache
def get_explainer(method: str) -> Explainer:
    """The (stateless, shared) adapter instance for ``method``."""
    module_name, _, class_name = ADAPTERS[method][0].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()  # type: ignore[no-any-return]


def applies(method: str, model: Any) -> bool:
    """Whether ``method`` explains ``model``'s flavour (without importing the adapter)."""
    return ADAPTERS[method][1] == getattr(model, "flavour", None)


def methods_for(model: Any) -> list[str]:
    """Names of the methods that apply to a loaded model."""
    return [name for name in ADAPTERS if applies(name, model)]

"""Method name -> adapter class, imported lazily so a SHAP request never imports torch."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from explainers.base import Explainer

ADAPTERS: dict[str, str] = {
    "shap": "explainers.shap_tabular:ShapExplainer",
    "counterfactuals": "explainers.counterfactuals.explainer:CounterfactualExplainer",
    "reasons": "explainers.reasons:ReasonsExplainer",
}


@cache
def get_explainer(method: str) -> Explainer:
    """The (stateless, shared) adapter instance for ``method``."""
    module_name, _, class_name = ADAPTERS[method].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()  # type: ignore[no-any-return]


def methods_for(model: Any) -> list[str]:
    """Names of the methods that apply to a loaded model."""
    return [name for name in ADAPTERS if type(get_explainer(name)).supports(model)]

"""Adapter instances by ``module:Class`` target, imported lazily: a tabular request never imports torch,
captum or transformers. Which method uses which adapter is declared by the method (``api.methods``)."""

from __future__ import annotations

import importlib
from functools import cache

from explainers.base import Explainer

SHAP = "explainers.shap_tabular:ShapExplainer"
COUNTERFACTUALS = "explainers.counterfactuals.explainer:CounterfactualExplainer"


@cache
def adapter(target: str) -> Explainer:
    """The (stateless, shared) adapter instance of ``target``."""
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()  # type: ignore[no-any-return]

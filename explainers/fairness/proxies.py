"""Proxies: how strongly each other feature is associated with a protected attribute's groups over the rows
(Cramér's V with bias correction for categories and booleans, as the profile computes it; the correlation
ratio eta for numbers), and whether the strongest are among the model's most important features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from explainers.fairness.groups import Attribute
from explainers.profile import cramers_v

STRONGEST = 3
"""Proxies named per attribute."""
TOP_IMPORTANT = 5
"""A proxy is "important" when its feature is among this many most important (global mean |SHAP|)."""


def correlation_ratio(codes: np.ndarray, values: np.ndarray) -> float | None:
    """eta: the share of a number's spread (standard deviation) explained by the groups."""
    finite = np.isfinite(values)
    codes, values = codes[finite], values[finite]
    if len(values) < 2:
        return None
    total = float(((values - values.mean()) ** 2).sum())
    if total == 0:
        return None
    counts = np.bincount(codes)
    present = counts > 0
    means = np.bincount(codes, weights=values)[present] / counts[present]
    between = float((counts[present] * (means - values.mean()) ** 2).sum())
    return math.sqrt(min(1.0, between / total))


def associations(model: Any, records: list[dict[str, Any]], attribute: Attribute) -> list[dict[str, Any]]:
    """Every other feature's association with the attribute's groups, strongest first."""
    frame = pd.DataFrame.from_records(records, columns=model.feature_order)
    groups = pd.Series(np.asarray(attribute.labels, dtype=object)[attribute.codes])
    out = []
    for spec in model.manifest.features:
        if spec.name == attribute.name:
            continue
        if spec.type == "numeric":
            value = correlation_ratio(attribute.codes, frame[spec.name].to_numpy(dtype=float))
            measure = "correlation_ratio"
        else:
            value = cramers_v(groups, frame[spec.name].astype(object))
            measure = "cramers_v"
        out.append({"feature": spec.name, "measure": measure, "association": value})
    return sorted(out, key=lambda p: -(p["association"] or 0.0))


def proxies(
    model: Any, records: list[dict[str, Any]], attribute: Attribute, ranking: list[str]
) -> dict[str, Any]:
    """The attribute's associations, and its strongest proxies with their importance rank."""
    found = associations(model, records, attribute)
    top = set(ranking[:TOP_IMPORTANT])
    strongest = [
        {
            **p,
            "importance_rank": ranking.index(p["feature"]) + 1 if p["feature"] in ranking else None,
            "important": p["feature"] in top,
        }
        for p in found[:STRONGEST]
        if p["association"] is not None
    ]
    return {"attribute": attribute.name, "associations": found, "strongest": strongest}

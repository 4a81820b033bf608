"""The profile of a tabular version's reference data: per-feature summaries, correlations, the rows the
isolation forest finds most anomalous, and a plain-language summary built from those numbers.

Conventions: ``std`` is the sample standard deviation (ddof=1), quantiles interpolate linearly (pandas'
default), Pearson and Spearman are pandas' ``corr`` over the numeric features, and Cramér's V is the
bias-corrected form of Bergsma (2013) from the chi-squared statistic without continuity correction, over
every pair of categorical (and boolean) features. An undefined value (a constant column) is null.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from explainers.envelope import library_versions
from explainers.ood import OodDetector
from model_store.tabular import TabularModel

QUANTILES = {"p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
TOP_CATEGORIES = 10
TOP_ANOMALIES = 10
CRAMERS_V = "bias-corrected (Bergsma 2013), chi-squared without continuity correction"


def dataset_profile(model: TabularModel, detector: OodDetector) -> dict[str, Any]:
    started = time.perf_counter()
    reference = model.reference
    specs = [model.manifest.feature(name) for name in model.feature_order]
    features = [_feature(spec.name, spec.type, reference[spec.name]) for spec in specs]
    numeric = [s.name for s in specs if s.type == "numeric"]
    categorical = [s.name for s in specs if s.type != "numeric"]
    correlations = {
        "numeric_features": numeric,
        "pearson": _matrix(reference[numeric].astype(float).corr(method="pearson")),
        "spearman": _matrix(reference[numeric].astype(float).corr(method="spearman")),
        "categorical_features": categorical,
        "cramers_v": [[cramers_v(reference[a], reference[b]) for b in categorical] for a in categorical],
        "cramers_v_method": CRAMERS_V,
    }
    anomalies = _anomalies(model, detector)
    profile = {
        "kind": "dataset_profile",
        "rows": len(reference),
        "features": features,
        "correlations": correlations,
        "anomalies": anomalies,
        "library_versions": library_versions("pandas", "scipy", "scikit-learn"),
    }
    profile["summary"] = summary(profile)
    profile["timing_ms"] = {"total": round((time.perf_counter() - started) * 1000, 3)}
    return profile


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _feature(name: str, kind: str, column: pd.Series) -> dict[str, Any]:
    missing = int(column.isna().sum())
    out: dict[str, Any] = {
        "feature": name,
        "type": kind,
        "count": int(column.notna().sum()),
        "missing": missing,
    }
    if kind == "numeric":
        values = column.astype(float).dropna()
        quantiles = values.quantile(list(QUANTILES.values())).tolist() if len(values) else [None] * 5
        out.update(
            min=_number(values.min()) if len(values) else None,
            max=_number(values.max()) if len(values) else None,
            mean=_number(values.mean()) if len(values) else None,
            std=_number(values.std()) if len(values) > 1 else None,
            quantiles=dict(zip(QUANTILES, quantiles, strict=True)),
        )
        return out
    counts = column.dropna().value_counts(sort=False)
    ranked = sorted(counts.items(), key=lambda item: (-int(item[1]), str(item[0])))
    total = max(1, int(counts.sum()))
    out.update(
        distinct=len(counts),
        top_categories=[
            {"value": _plain(value), "count": int(count), "share": int(count) / total}
            for value, count in ranked[:TOP_CATEGORIES]
        ],
    )
    return out


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _matrix(frame: pd.DataFrame) -> list[list[float | None]]:
    return [[_number(v) for v in row] for row in frame.to_numpy(dtype=float).tolist()]


def cramers_v(a: pd.Series, b: pd.Series) -> float | None:
    """Bias-corrected Cramér's V of two categorical columns (rows where either is missing left out)."""
    both = pd.DataFrame({"a": a, "b": b}).dropna()
    n = len(both)
    codes_a, levels_a = pd.factorize(both["a"], sort=True)
    codes_b, levels_b = pd.factorize(both["b"], sort=True)
    r, k = len(levels_a), len(levels_b)
    if n < 2 or r < 2 or k < 2:
        return None
    table = np.bincount(codes_a * k + codes_b, minlength=r * k).reshape(r, k).astype(float)
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    r_corr = r - (r - 1) ** 2 / (n - 1)
    k_corr = k - (k - 1) ** 2 / (n - 1)
    denominator = min(k_corr - 1, r_corr - 1)
    return math.sqrt(phi2 / denominator) if denominator > 0 else None


def _anomalies(model: TabularModel, detector: OodDetector) -> dict[str, Any]:
    """Every reference row scored by the version's isolation forest; the most anomalous listed."""
    reference = model.reference
    scores = detector.scores(model.encode(reference.to_dict("records")))
    order = np.argsort(scores, kind="stable")[:TOP_ANOMALIES]
    rows = reference.iloc[order].to_dict("records")
    flagged = int((scores < detector.threshold).sum())
    return {
        "count": flagged,
        "share": flagged / len(reference),
        "threshold": detector.threshold,
        "top": [
            {"row": int(i), "score": float(scores[i]), "values": {k: _plain(v) for k, v in row.items()}}
            for i, row in zip(order.tolist(), rows, strict=True)
        ],
        "detector": detector.describe(),
    }


def _strongest(names: list[str], matrix: list[list[float | None]]) -> tuple[str, str, float] | None:
    best: tuple[str, str, float] | None = None
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            value = matrix[i][j]
            if value is not None and (best is None or abs(value) > abs(best[2])):
                best = (names[i], names[j], value)
    return best


def summary(profile: dict[str, Any]) -> str:
    """A few deterministic sentences stating the profile's own numbers."""
    features = profile["features"]
    kinds = {kind: sum(f["type"] == kind for f in features) for kind in ("numeric", "categorical", "boolean")}
    described = ", ".join(f"{count} {kind}" for kind, count in kinds.items() if count)
    sentences = [f"The reference data has {profile['rows']} rows and {len(features)} features ({described})."]
    most_missing = max(features, key=lambda f: f["missing"])
    if most_missing["missing"] == 0:
        sentences.append("No feature has missing values.")
    else:
        share = most_missing["missing"] / profile["rows"]
        sentences.append(
            f"{most_missing['feature']} has the most missing values: {most_missing['missing']} ({share:.1%})."
        )
    correlations = profile["correlations"]
    pearson = _strongest(correlations["numeric_features"], correlations["pearson"])
    if pearson is not None:
        sentences.append(
            f"The strongest numeric correlation is between {pearson[0]} and {pearson[1]} "
            f"(Pearson r = {pearson[2]:.2f})."
        )
    cramer = _strongest(correlations["categorical_features"], correlations["cramers_v"])
    if cramer is not None:
        sentences.append(
            f"The strongest association between categorical features is between {cramer[0]} and "
            f"{cramer[1]} (Cramér's V = {cramer[2]:.2f})."
        )
    anomalies = profile["anomalies"]
    top = anomalies["top"][0]
    sentences.append(
        f"The isolation forest flags {anomalies['count']} of {profile['rows']} rows "
        f"({anomalies['share']:.1%}) as anomalous (score below {anomalies['threshold']:.3f}); "
        f"the most anomalous is row {top['row']} (score {top['score']:.3f})."
    )
    return " ".join(sentences)

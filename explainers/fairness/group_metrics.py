"""Group metrics of one protected attribute with fairlearn's ``MetricFrame``, and seeded bootstrap intervals.

Per group: the count, the selection rate (share of rows given the favourable decision), the mean predicted
probability of the favourable class, SageMaker Clarify's DPPL (the other rows' selection rate minus the
group's) and DI (the group's selection rate over the other rows'); with true outcomes also the true and false
positive rates, precision and accuracy (fairlearn's and scikit-learn's functions). Between groups (those
with at least ``min_group_size`` rows): the demographic-parity difference and ratio, the equalized-odds
difference, and the four-fifths flag (ratio below 0.8).

The intervals resample the rows with replacement ``resamples`` times (``numpy.random.default_rng(seed)``)
and recompute every figure on each resample from weighted group sums (the same figures fairlearn gives on the
resampled rows); the 2.5th and 97.5th percentiles of the resampled figures are the 95% interval.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    count,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, precision_score

from explainers.fairness.groups import Attribute

FOUR_FIFTHS = 0.8
OUTCOME_FIGURES = ("true_positive_rate", "false_positive_rate", "precision", "accuracy")
BETWEEN = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference")


def _precision(y_true: Any, y_pred: Any) -> float:
    return float(precision_score(y_true, y_pred, zero_division=0))


def _mean(_y_true: Any, y_pred: Any) -> float:
    return float(np.mean(y_pred))


def point_estimates(
    attribute: Attribute, decision: np.ndarray, probability: np.ndarray, outcome: np.ndarray | None
) -> dict[str, dict[str, float]]:
    """{figure: {group label: value}} for the groups present, from fairlearn's ``MetricFrame``."""
    # a named Series: fairlearn reads a one-row object array as one row of several features
    groups = pd.Series(np.asarray(attribute.labels, dtype=object)[attribute.codes], name=attribute.name)
    metrics: dict[str, Any] = {"count": count, "selection_rate": selection_rate}
    if outcome is not None:
        metrics |= {
            "true_positive_rate": true_positive_rate,
            "false_positive_rate": false_positive_rate,
            "precision": _precision,
            "accuracy": accuracy_score,
        }
    y_true = outcome if outcome is not None else decision
    with warnings.catch_warnings():  # a group without positives: rates of 0, as fairlearn defines them
        warnings.simplefilter("ignore", RuntimeWarning)
        frame = MetricFrame(metrics=metrics, y_true=y_true, y_pred=decision, sensitive_features=groups)
        means = MetricFrame(metrics=_mean, y_true=y_true, y_pred=probability, sensitive_features=groups)
    table = {name: {str(g): float(v) for g, v in frame.by_group[name].items()} for name in metrics}
    table["mean_probability"] = {str(g): float(v) for g, v in means.by_group.items()}
    return table


def _ratio(top: np.ndarray, bottom: np.ndarray, empty: float = np.nan) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), empty)


def sums(codes: np.ndarray, groups: int, weights: np.ndarray, columns: dict[str, np.ndarray]) -> dict:
    """Weighted per-group sums of each column (the weights themselves as ``n``)."""
    out = {"n": np.bincount(codes, weights=weights, minlength=groups)}
    for name, column in columns.items():
        out[name] = np.bincount(codes, weights=weights * column, minlength=groups)
    return out


def figures(total: dict[str, np.ndarray], compared: np.ndarray, outcomes: bool) -> dict[str, Any]:
    """Every figure from per-group sums (arrays over groups); between-group figures over ``compared``."""
    n, positive = total["n"], total["positive"]
    rate = _ratio(positive, n)
    rest_rate = _ratio(positive.sum() - positive, n.sum() - n)
    out: dict[str, Any] = {
        "selection_rate": rate,
        "mean_probability": _ratio(total["probability"], n),
        "dppl": rest_rate - rate,
        "di": _ratio(rate, rest_rate),
    }
    if outcomes:
        out["true_positive_rate"] = _ratio(total["tp"], total["actual"], 0.0)
        out["false_positive_rate"] = _ratio(positive - total["tp"], n - total["actual"], 0.0)
        out["precision"] = _ratio(total["tp"], positive, 0.0)
        out["accuracy"] = _ratio(total["correct"], n)
    kept = compared & (n > 0)
    chosen = rate[kept]
    spread = (lambda v: float(v.max() - v.min())) if kept.sum() >= 2 else (lambda v: np.nan)
    out["demographic_parity_difference"] = spread(chosen)
    out["demographic_parity_ratio"] = (
        float(chosen.min() / chosen.max()) if kept.sum() >= 2 and chosen.max() > 0 else np.nan
    )
    if outcomes:
        eo = [spread(out["true_positive_rate"][kept]), spread(out["false_positive_rate"][kept])]
        out["equalized_odds_difference"] = float(np.max(eo)) if kept.sum() >= 2 else np.nan
    return out


def columns_of(decision: np.ndarray, probability: np.ndarray, outcome: np.ndarray | None) -> dict:
    columns = {"positive": decision.astype(float), "probability": probability}
    if outcome is not None:
        columns |= {
            "actual": outcome.astype(float),
            "tp": (decision & outcome).astype(float),
            "correct": (decision == outcome).astype(float),
        }
    return columns


def bootstrap(
    attributes: list[Attribute],
    columns: dict[str, np.ndarray],
    compared: list[np.ndarray],
    resamples: int,
    seed: int,
) -> list[dict[str, np.ndarray]]:
    """Per attribute, each figure's resampled values stacked (resamples first); rows are drawn once per
    resample for all attributes."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(columns.values())))
    outcomes = "actual" in columns
    drawn: list[list[dict[str, Any]]] = [[] for _ in attributes]
    for _ in range(resamples):
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
        for index, attribute in enumerate(attributes):
            total = sums(attribute.codes, len(attribute.labels), weights, columns)
            drawn[index].append(figures(total, compared[index], outcomes))
    return [
        {k: np.asarray([d[k] for d in draws], dtype=float) for k in draws[0]} if draws else {}
        for draws in drawn
    ]


def interval(values: np.ndarray) -> list[float | None]:
    """The 95% percentile interval of resampled values (None where no resample defines the figure)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [None, None]
    low, high = np.percentile(finite, [2.5, 97.5])
    return [float(low), float(high)]

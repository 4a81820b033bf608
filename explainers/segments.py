"""Explanation segments: the reference rows clustered by their SHAP attributions.

The attributions are what ``POST .../explain/shap`` returns for the rows with the version's defaults
(algorithm, output space, target; columnar layout), computed on every reference row up to ``EXACT_ROWS``
(``AGNOSTIC_ROWS`` for the sampled algorithms; a seeded sample above that). KMeans (fixed ``random_state``,
``n_init``) runs for every k in 2..k_max on the attribution matrix as it is (every column is in the output
space's units), and the k with the highest mean silhouette (Euclidean) is kept; ties keep the smaller k.
KMeans runs on one thread (``threadpool_limits(1)``): ~0.1 s per k for 1,000 rows, where OpenMP threads on a
busy two-core host took seconds.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

from explainers.envelope import library_versions
from explainers.rows import tabular_rows
from explainers.shap_backends import BACKGROUND_SEED
from explainers.shap_tabular import DEFAULTS, ShapExplainer
from model_store.errors import InvalidInput
from model_store.tabular import TabularModel
from model_store.versions import VersionInfo

K_MIN = 2
K_MAX = 8
EXACT_ROWS = 2000
AGNOSTIC_ROWS = 100
RANDOM_STATE = 0
N_INIT = 10
DOMINANT = 3


def explanation_segments(info: VersionInfo, model: TabularModel, k_max: int) -> dict[str, Any]:
    started = time.perf_counter()
    rows = _rows(model)
    records = model.reference.iloc[rows].to_dict("records")
    explanation = ShapExplainer().explain(info, model, tabular_rows(model, records), {"layout": "columnar"})
    values = np.array([r["attribution_values"] for r in explanation.results], dtype=float)
    silhouettes, chosen, labels = cluster(values, k_max)
    predictions = [r["prediction"] for r in explanation.results]
    outcome = _outcome_rule(model)
    return {
        "kind": "explanation_segments",
        "method": {
            "name": "kmeans",
            "params": {
                "k_min": K_MIN,
                "k_max": k_max,
                "n_init": N_INIT,
                "random_state": RANDOM_STATE,
                "rows": len(rows),
                "row_seed": BACKGROUND_SEED,
                "distance": "euclidean on the attribution matrix",
            },
            "library_versions": library_versions("scikit-learn", "shap", "numpy"),
        },
        "attributions": {
            "method": {k: getattr(explanation.method, k) for k in ("name", "algorithm", "params")},
            "output": explanation.output,
        },
        "rows": len(rows),
        "silhouette": [{"k": k, "score": score} for k, score in silhouettes.items()],
        "k": chosen,
        "outcome": outcome,
        "segments": [_segment(model, s, labels == s, values, predictions, outcome) for s in range(chosen)],
        "assignments": {"rows": rows, "labels": labels.tolist()},
        "timing_ms": {"total": round((time.perf_counter() - started) * 1000, 3)},
    }


def cluster(values: np.ndarray, k_max: int) -> tuple[dict[int, float], int, np.ndarray]:
    """Silhouette per k tried, the best k (the smaller on ties) and its labels."""
    distinct = len(np.unique(values, axis=0))
    ks = list(range(K_MIN, min(k_max, distinct - 1) + 1))  # silhouette needs k < distinct rows
    if not ks:
        raise InvalidInput.field("k_max", "The reference rows have too few distinct attributions to cluster.")
    with threadpool_limits(limits=1):  # one request, one core: OpenMP threads oversubscribe a busy host
        fits = {k: KMeans(n_clusters=k, n_init=N_INIT, random_state=RANDOM_STATE).fit(values) for k in ks}
        silhouettes = {k: float(silhouette_score(values, fits[k].labels_)) for k in ks}
    chosen = max(ks, key=lambda k: (silhouettes[k], -k))
    return silhouettes, chosen, np.asarray(fits[chosen].labels_)


def _rows(model: TabularModel) -> list[int]:
    """Positions of the reference rows explained: all of them, or a seeded sample (kept in order)."""
    defaults = {**DEFAULTS, **model.manifest.defaults.get("shap", {})}
    backend = ShapExplainer().backend(
        model, defaults["algorithm"], defaults["output"], int(defaults["background_rows"])
    )
    limit = AGNOSTIC_ROWS if backend.stochastic else EXACT_ROWS
    n = len(model.reference)
    if n <= limit:
        return list(range(n))
    return sorted(np.random.default_rng(BACKGROUND_SEED).choice(n, size=limit, replace=False).tolist())


def _outcome_rule(model: TabularModel) -> dict[str, Any]:
    if not model.is_classifier:
        return {"statistic": "mean_prediction", "class": None}
    favourable = model.manifest.favourable_class
    if favourable is None and len(model.classes) == 2:
        favourable = model.classes[1]
    if favourable is None:
        return {"statistic": "none", "class": None}
    return {"statistic": "favourable_share", "class": favourable}


def _segment(
    model: TabularModel,
    segment: int,
    members: np.ndarray,
    values: np.ndarray,
    predictions: list[dict[str, Any]],
    outcome: dict[str, Any],
) -> dict[str, Any]:
    own = values[members]
    mean_abs, mean = np.abs(own).mean(axis=0), own.mean(axis=0)
    top = np.argsort(-mean_abs, kind="stable")[:DOMINANT]
    dominant = [
        {
            "feature": model.feature_order[j],
            "mean_abs_attribution": float(mean_abs[j]),
            "mean_attribution": float(mean[j]),
        }
        for j in top
    ]
    chosen = [p for p, m in zip(predictions, members.tolist(), strict=True) if m]
    out: dict[str, Any] = {
        "segment": segment,
        "size": int(members.sum()),
        "share": float(members.mean()),
        "dominant_features": dominant,
        "outcome_rate": _rate(chosen, outcome),
    }
    if model.is_classifier:
        out["class_shares"] = {c: sum(p["label"] == c for p in chosen) / len(chosen) for c in model.classes}
    out["description"] = _describe(model, out, outcome)
    return out


def _rate(predictions: list[dict[str, Any]], outcome: dict[str, Any]) -> float | None:
    if outcome["statistic"] == "mean_prediction":
        return float(np.mean([p["value"] for p in predictions]))
    if outcome["statistic"] == "favourable_share":
        return sum(p["label"] == outcome["class"] for p in predictions) / len(predictions)
    return None


def _display(model: TabularModel, feature: str) -> str:
    return model.manifest.feature(feature).display_name or feature


def _describe(model: TabularModel, segment: dict[str, Any], outcome: dict[str, Any]) -> str:
    drivers = [
        f"{_display(model, d['feature'])} (mean attribution {d['mean_attribution']:+.3f})"
        for d in segment["dominant_features"]
    ]
    listed = drivers[0] if len(drivers) == 1 else ", ".join(drivers[:-1]) + " and " + drivers[-1]
    text = (
        f"Segment {segment['segment']} holds {segment['size']} rows ({segment['share']:.1%}), "
        f"driven most by {listed}"
    )
    if outcome["statistic"] == "favourable_share":
        return f"{text}; {segment['outcome_rate']:.1%} are predicted {outcome['class']}."
    if outcome["statistic"] == "mean_prediction":
        return f"{text}; the mean prediction is {segment['outcome_rate']:.4g}."
    return f"{text}."

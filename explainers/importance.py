"""Global importance: mean |SHAP| per raw feature over the version's reference data."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from explainers.envelope import library_versions
from explainers.shap_backends import BACKGROUND_SEED
from explainers.shap_tabular import ShapExplainer
from model_store.tabular import TabularModel

EXACT_ROWS = 1000
AGNOSTIC_ROWS = 50


def global_importance(model: TabularModel) -> dict[str, Any]:
    """Importance per feature (and per class for classifiers), with how it was computed."""
    started = time.perf_counter()
    backend = ShapExplainer().backend(model, "auto", None, 100)
    limit = AGNOSTIC_ROWS if backend.stochastic else EXACT_ROWS
    reference = model.reference
    sample = reference if len(reference) <= limit else reference.sample(n=limit, random_state=BACKGROUND_SEED)
    records = sample.to_dict("records")
    values, _base = backend.run(records, model.encode(records), BACKGROUND_SEED, 512)
    per_output = np.abs(values).mean(axis=0)  # (features, outputs)
    labels = model.classes if model.is_classifier else ["value"]
    if model.is_classifier and len(labels) == 2:
        favourable = model.class_index(model.manifest.favourable_class or labels[1])
        overall = per_output[:, favourable]
    else:
        overall = per_output.mean(axis=1)
    order = np.argsort(-overall, kind="stable")
    return {
        "method": {
            "name": "shap",
            "algorithm": backend.algorithm,
            "params": {**backend.params(), "rows": len(records), "row_seed": BACKGROUND_SEED},
            "library_versions": library_versions("shap", "scikit-learn", "numpy"),
        },
        "output": {"space": backend.space, "statistic": "mean_abs_shap"},
        "features": [
            {
                "feature": model.feature_order[j],
                "importance": float(overall[j]),
                "per_class": {label: float(per_output[j, k]) for k, label in enumerate(labels)}
                if model.is_classifier
                else None,
            }
            for j in order
        ],
        "timing_ms": {"total": round((time.perf_counter() - started) * 1000, 3)},
    }

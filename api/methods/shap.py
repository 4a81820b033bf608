"""SHAP attributions per raw input feature (``explainers.shap_tabular``)."""

from __future__ import annotations

from typing import Any

from api.methods.spec import Acc, MethodSpec, Narrative, Picture
from api.schemas.explain import ExplanationSchema, ShapRequestSchema
from explainers.narratives import attribution_summary
from explainers.registry import SHAP
from explainers.shap_tabular import ADDITIVITY_TOLERANCE


def row_independent(explanation: Any) -> bool:
    """Deterministic SHAP (tree, linear: no ``max_evals``) and the batched permutation SHAP of remote
    models (each row's permutations drawn from the seed) give each row what it alone gets; shap's seeded
    sampling's draws depend on the row's position in the request."""
    params = explanation.method.params
    return params.get("max_evals") is None or params.get("implementation") == "batched"


def row_quality(quality: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """``ShapExplainer``'s quality figures for one row: the tolerance scales with the largest output of the
    row, which for binary and regression models is |output_value| (the other class is its mirror or
    complement); multiclass margins keep the chunk's tolerance (an upper bound)."""
    residual = abs(float(result["additivity_residual"]))
    probabilities = (result.get("prediction") or {}).get("probabilities")
    tolerance = quality["additivity_tolerance"]
    if probabilities is None or len(probabilities) <= 2:
        tolerance = ADDITIVITY_TOLERANCE * max(1.0, abs(float(result["output_value"])))
    return {
        **quality,
        "max_additivity_residual": residual,
        "additivity_tolerance": tolerance,
        "additivity_ok": residual <= tolerance,
    }


def accumulate(acc: Acc, result: dict[str, Any], feature_order: list[str] | None) -> None:
    """Sum of |attribution| and count per feature (with ``top_k``, over the rows that list it)."""
    pairs: Any
    if "attribution_values" in result and feature_order is not None:
        pairs = zip(feature_order, result["attribution_values"], strict=True)
    else:
        pairs = ((a["feature"], a["attribution"]) for a in result.get("attributions", []))
    features = acc.setdefault("features", {})
    for feature, value in pairs:
        pair = features.get(feature)
        if pair is None:
            features[feature] = [abs(value), 1.0]
        else:
            pair[0] += abs(value)
            pair[1] += 1.0


def finalize(acc: Acc) -> dict[str, Any]:
    features = acc.get("features", {})
    ranked = (
        {
            "feature": name,
            "mean_abs_attribution": pair[0] / pair[1] if pair[1] else None,
            "rows": int(pair[1]),
        }
        for name, pair in features.items()
    )
    return {
        "mean_abs_attribution": sorted(
            ranked, key=lambda item: (-(item["mean_abs_attribution"] or 0.0), item["feature"])
        )
    }


def narrative(result: dict[str, Any], envelope: dict[str, Any], context: Narrative) -> str:
    return attribution_summary(result, envelope, context.names)


SPEC = MethodSpec(
    name="shap",
    envelope_kind="attribution",
    flavour="tabular",
    adapter=SHAP,
    request_schema=ShapRequestSchema,
    response_schema=ExplanationSchema,
    summary="SHAP attributions per raw input feature, in a stated output space and target class.",
    caps=lambda s: {"max_evals": s.max_shap_evals, "background_rows": s.max_background_rows},
    limits=lambda s: {"max_work": s.max_shap_work},
    probe_options={"max_evals": 1},
    warm=True,
    batched=True,
    row_independent=row_independent,
    row_quality=row_quality,
    accumulate=accumulate,
    finalize=finalize,
    narrative=narrative,
    picture=Picture("waterfall", names=True, values=True),
    example={"top_k": 5},
)

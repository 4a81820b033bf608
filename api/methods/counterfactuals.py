"""Counterfactuals: the smallest realistic changes that reach the desired outcome
(``explainers.counterfactuals``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.methods.spec import Acc, MethodSpec, Narrative, Picture, add
from api.schemas.recourse import CounterfactualExplanationSchema, CounterfactualRequestSchema
from explainers.narratives import counterfactual_summary
from explainers.registry import COUNTERFACTUALS

if TYPE_CHECKING:
    from api.settings import Settings


def recourse_caps(settings: Settings) -> dict[str, int]:
    return {"budget_ms": settings.cf_budget_cap_ms}


def recourse_instances(settings: Settings) -> int:
    return int(settings.max_cf_instances)


def status_counts(acc: Acc) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(acc.get("status", {}).items())}


def accumulate(acc: Acc, result: dict[str, Any], _feature_order: list[str] | None) -> None:
    add(acc, ("status", result["status"]), 1)
    for counterfactual in result.get("counterfactuals", []):
        add(acc, ("changed",), [float(len(counterfactual["changes"])), 1.0])


def finalize(acc: Acc) -> dict[str, Any]:
    status = status_counts(acc)
    needing = status.get("ok", 0) + status.get("no_counterfactual", 0)
    changed = acc.get("changed")
    return {
        "status_counts": status,
        "recourse_share": status.get("ok", 0) / needing if needing else None,
        "mean_changed_features": changed[0] / changed[1] if changed and changed[1] else None,
    }


def narrative(result: dict[str, Any], envelope: dict[str, Any], context: Narrative) -> str:
    return counterfactual_summary(result, envelope, context.names, context.scales)


SPEC = MethodSpec(
    name="counterfactuals",
    envelope_kind="counterfactual",
    flavour="tabular",
    adapter=COUNTERFACTUALS,
    request_schema=CounterfactualRequestSchema,
    response_schema=CounterfactualExplanationSchema,
    summary=(
        "Counterfactuals: the smallest realistic changes that reach the desired outcome, each re-scored by\n"
        "the model and checked against every constraint of the manifest and the request."
    ),
    max_instances=recourse_instances,
    caps=recourse_caps,
    cap_units={"budget_ms": " ms"},
    probe_options={"budget_ms": 10},
    warm=True,
    accumulate=accumulate,
    finalize=finalize,
    narrative=narrative,
    needs_effort_scales=True,
    picture=Picture("counterfactual", names=True, scales=True),
    example={"total_cfs": 2, "features_to_vary": ["duration_in_month", "credit_amount"], "budget_ms": 500},
)

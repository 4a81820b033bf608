"""Adverse-action reasons for declined applications (``explainers.reasons``)."""

from __future__ import annotations

from typing import Any

from api.methods.counterfactuals import recourse_caps, recourse_instances, status_counts
from api.methods.spec import Acc, MethodSpec, Narrative, Picture, add
from api.schemas.recourse import ReasonsExplanationSchema, ReasonsRequestSchema
from explainers.narratives import reasons_summary


def accumulate(acc: Acc, result: dict[str, Any], _feature_order: list[str] | None) -> None:
    add(acc, ("status", result["status"]), 1)
    for reason in result.get("reasons", []):
        add(acc, ("reasons", reason["feature"]), [1.0, 1.0 if reason["rank"] == 1 else 0.0])
    if result.get("counterfactual_status") is not None:
        add(acc, ("counterfactual_status", result["counterfactual_status"]), 1)


def finalize(acc: Acc) -> dict[str, Any]:
    status = status_counts(acc)
    total = sum(status.values())
    out: dict[str, Any] = {
        "status_counts": status,
        "declined_share": status.get("declined", 0) / total if total else None,
        "reason_counts": sorted(
            (
                {"feature": name, "count": int(pair[0]), "first_reason": int(pair[1])}
                for name, pair in acc.get("reasons", {}).items()
            ),
            key=lambda item: (-item["count"], item["feature"]),
        ),
    }
    if acc.get("counterfactual_status"):
        out["counterfactual_status_counts"] = {
            k: int(v) for k, v in sorted(acc["counterfactual_status"].items())
        }
    return out


def narrative(result: dict[str, Any], envelope: dict[str, Any], context: Narrative) -> str:
    return reasons_summary(result, envelope, context.names)


SPEC = MethodSpec(
    name="reasons",
    envelope_kind="reasons",
    flavour="tabular",
    adapter="explainers.reasons:ReasonsExplainer",
    request_schema=ReasonsRequestSchema,
    response_schema=ReasonsExplanationSchema,
    summary="Adverse-action reasons for declined applications, ranked, from the manifest's reason catalogue.",
    max_instances=recourse_instances,
    caps=recourse_caps,
    cap_units={"budget_ms": " ms"},
    probe_options={"budget_ms": 10},
    accumulate=accumulate,
    finalize=finalize,
    narrative=narrative,
    picture=Picture("reasons", names=True),
    example={"max_reasons": 3},
)

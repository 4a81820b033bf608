"""Fairness report: group metrics (fairlearn's ``MetricFrame``) with seeded bootstrap intervals, a
counterfactual flip test and proxies, per protected attribute of a tabular classifier, over the rows sent or
the version's reference data (``explainers.fairness``). A job gives each row its own part (groups, decision,
flip-test moves) and adds the parts into the report's figures in its summary."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from api.methods.spec import MethodSpec, Narrative, Picture
from api.schemas.fairness import FairnessExplanationSchema, FairnessJobSchema, FairnessRequestSchema
from explainers.base import NO_LIMITS, Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from explainers.fairness import narrative as fairness_narrative
from explainers.fairness import summary as job_summary
from explainers.fairness.report import favourable_of, report, row_parts, with_outcome_column
from explainers.plots import Drawer
from explainers.rows import Rows, tabular
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

SETTINGS = {
    "max_fairness_rows": 5000,
    "max_fairness_resamples": 200,
    "fairness_min_group_size": 30,
}
LIBRARIES = ("fairlearn", "scikit-learn", "numpy", "shap")
DEFAULTS: dict[str, Any] = {
    "attributes": None,
    "bins": None,
    "seed": 0,
    "resamples": None,
    "min_group_size": None,
    "data": "instances",
    "outcomes": None,
    "outcome_column": None,
    "offset": 0,
    "limit": 20,
}
"""The request's defaults, for calls that send no options (a worker's warm-up)."""


def _resolved(options: dict[str, Any], limits: Mapping[str, Any]) -> dict[str, Any]:
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if opts["resamples"] is None:
        opts["resamples"] = limits.get("default_resamples", 200)
    if opts["min_group_size"] is None:
        opts["min_group_size"] = limits.get("default_min_group_size", 30)
    return opts


def _reference(model: Any, limits: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The reference rows and, when it keeps the manifest's target column, their true outcomes (422 naming
    ``data`` when they are more than a request may hold: a job over ``dataset: reference`` takes them)."""
    most = limits.get("max_rows")
    if most is not None and len(model.reference) > most:
        raise InvalidInput.field(
            "data",
            f"The reference data has {len(model.reference)} rows, more than the {most} a fairness request "
            'may hold: submit a job (POST /v1/jobs with kind "fairness" and dataset "reference").',
        )
    records = model.reference.to_dict("records")
    return records, getattr(model, "reference_outcomes", None)


class FairnessExplainer(Explainer):
    name = "fairness"
    kind = "fairness_report"

    def explain(
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        rows = tabular(rows)
        started = time.perf_counter()
        opts = _resolved(options, limits)
        _, label = favourable_of(model)
        if opts.get("per_row"):
            results = row_parts(model, rows.records, rows.encoded, opts)
            count = len(results)
        elif opts["data"] == "reference":
            records, outcomes = _reference(model, limits)
            results = [report(model, records, model.encode(records), {**opts, "outcomes": outcomes})]
            count = len(records)
        else:
            results = [report(model, rows.records, rows.encoded, opts)]
            count = len(rows.records)
        keys = ("attributes", "bins", "seed", "resamples", "min_group_size", "data", "outcome_column")
        params = {**{k: opts[k] for k in keys}, "per_row": bool(opts.get("per_row"))}
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo(
                "fairness", "group_metrics_flip_test_proxies", params, library_versions(*LIBRARIES)
            ),
            output={"space": "probability", "target": label, "target_rule": "favourable_class"},
            results=results,
            quality={"rows": count},
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3)},
        )


def row_independent(explanation: Explanation) -> bool:
    """A job's per-row parts are each what the row alone gets."""
    return bool(explanation.method.params.get("per_row"))


def row_quality(quality: dict[str, Any], _result: dict[str, Any]) -> dict[str, Any]:
    """One row's quality figures: the chunk's (its OOD description), counting one row."""
    return {**quality, "rows": 1}


def outcome_label_column(options: dict[str, Any]) -> dict[str, str]:
    """A job's outcome column, which its rows keep beside the model's features."""
    column = options.get("outcome_column")
    return {column: "outcome_column"} if column else {}


def narrative(result: dict[str, Any], _envelope: dict[str, Any], context: Narrative) -> str:
    return fairness_narrative.summary(result, context.names)


SPEC = MethodSpec(
    name="fairness",
    envelope_kind="fairness_report",
    flavour="tabular",
    adapter="api.methods.fairness:FairnessExplainer",
    request_schema=FairnessRequestSchema,
    response_schema=FairnessExplanationSchema,
    summary=(
        "Fairness report: per protected attribute, group metrics (fairlearn) with seeded bootstrap\n"
        "intervals, a counterfactual flip test and proxies, over the rows sent or the reference data."
    ),
    route="/fairness",
    job_schema=FairnessJobSchema,
    settings=SETTINGS,
    instances_optional=True,
    max_instances=lambda s: s.method_setting("max_fairness_rows"),
    caps=lambda s: {"resamples": s.method_setting("max_fairness_resamples")},
    limits=lambda s: {
        "max_rows": s.method_setting("max_fairness_rows"),
        "default_resamples": s.method_setting("max_fairness_resamples"),
        "default_min_group_size": s.method_setting("fairness_min_group_size"),
    },
    probe_options={"resamples": 0, "outcome_column": None},  # a reference row has no outcome column
    batched=True,
    row_independent=row_independent,
    row_quality=row_quality,
    accumulate_rows=job_summary.accumulate_rows,
    finalize=job_summary.finalize,
    prepare=with_outcome_column,
    label_columns=outcome_label_column,
    narrative=narrative,
    picture=Picture(Drawer("explainers.plots.fairness:draw", (10.0, 8.0)), names=True),
    example={"attributes": ["age_in_years", "foreign_worker"], "resamples": 20, "min_group_size": 1},
)

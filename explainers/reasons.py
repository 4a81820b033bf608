"""Adverse-action reasons: the features that pushed a declined application away from the favourable class.

Reasons are SHAP attributions toward the favourable class (one-hot columns already summed per raw feature),
most negative first, each mapped to the manifest's reason-code catalogue. Protected features are never
offered as reasons; when one would have ranked, it is reported separately. On request, each reason also gets
the counterfactual (from Candor's guaranteed search) that changes that feature with the fewest changes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from explainers.base import NO_LIMITS, Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef
from explainers.registry import COUNTERFACTUALS, SHAP, adapter
from explainers.rows import Rows, TabularRows, tabular
from model_store.errors import InvalidInput
from model_store.tabular import TabularModel
from model_store.versions import VersionInfo

DEFAULT_MAX_REASONS = 4


class ReasonsExplainer(Explainer):
    name = "reasons"
    kind = "reasons"

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
        favourable = model.manifest.favourable_class
        if not model.is_classifier or len(model.classes) != 2 or favourable is None:
            raise InvalidInput.field(
                "model", "Reasons apply to binary classification models with a favourable class."
            )
        max_reasons = int(options.get("max_reasons") or DEFAULT_MAX_REASONS)
        attributions = adapter(SHAP).explain(info, model, rows, {"target": favourable, "layout": "columnar"})
        declined = [r["prediction"]["label"] != favourable for r in attributions.results]
        counterfactuals = self._counterfactuals(info, model, rows, declined, options)
        results = []
        for index, (row, is_declined) in enumerate(zip(attributions.results, declined, strict=True)):
            cf_result = counterfactuals.get(index)
            result: dict[str, Any] = {
                "status": "declined" if is_declined else "not_declined",
                "prediction": row["prediction"],
                "reasons": [],
                "protected_excluded": [],
                "counterfactual_status": cf_result["status"] if cf_result else None,
            }
            if is_declined:
                result.update(
                    _ranked(model, rows.records[index], row["attribution_values"], max_reasons, cf_result)
                )
            results.append(result)
        shap_method = attributions.method
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo(
                "reasons",
                shap_method.algorithm,
                {
                    "max_reasons": max_reasons,
                    "with_counterfactual": bool(options.get("with_counterfactual")),
                    "shap": shap_method.params,
                    "counterfactuals": {
                        k: options.get(k) for k in ("seed", "budget_ms") if options.get(k) is not None
                    },
                },
                shap_method.library_versions,
            ),
            output={"space": attributions.output["space"], "target": favourable},
            results=results,
            quality=attributions.quality,
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3)},
        )

    @staticmethod
    def _counterfactuals(
        info: VersionInfo, model: Any, rows: TabularRows, declined: list[bool], options: dict[str, Any]
    ) -> dict[int, dict[str, Any]]:
        """Counterfactual results of the declined rows, by row index (only with ``with_counterfactual``)."""
        indices = [i for i, d in enumerate(declined) if d]
        if not options.get("with_counterfactual") or not indices:
            return {}
        cf_options = {k: options[k] for k in ("seed", "budget_ms") if options.get(k) is not None}
        found = adapter(COUNTERFACTUALS).explain(info, model, rows.subset(indices), cf_options)
        return dict(zip(indices, found.results, strict=True))


def _ranked(
    model: TabularModel,
    instance: dict[str, Any],
    values: list[float],
    max_reasons: int,
    cf_result: dict[str, Any] | None,
) -> dict[str, Any]:
    """The reasons and the protected features that would have ranked among them."""
    order = sorted((v, j) for j, v in enumerate(values) if v < 0)
    reasons: list[dict[str, Any]] = []
    protected: list[dict[str, Any]] = []
    for position, (value, j) in enumerate(order, start=1):
        name = model.feature_order[j]
        spec = model.manifest.feature(name)
        if spec.protected:
            if position <= max_reasons:
                protected.append({"feature": name, "attribution": value, "would_rank": position})
            continue
        if len(reasons) < max_reasons:
            entry = model.manifest.reasons.get(name)
            reasons.append(
                {
                    "rank": len(reasons) + 1,
                    "feature": name,
                    "value": instance[name],
                    "attribution": value,
                    "code": entry["code"] if entry else None,
                    "text": entry["text"] if entry else f"{spec.display_name or name}",
                    "address": _address(name, cf_result),
                }
            )
    return {"reasons": reasons, "protected_excluded": protected}


def _address(feature: str, cf_result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The counterfactual changing ``feature`` with the fewest changes, if any was found."""
    if not cf_result:
        return None
    touching = [
        cf for cf in cf_result["counterfactuals"] if any(c["feature"] == feature for c in cf["changes"])
    ]
    if not touching:
        return None
    best = min(touching, key=lambda cf: len(cf["changes"]))
    return {"changes": best["changes"], "counterfactual": best["instance"]}

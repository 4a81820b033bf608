"""Per-row attribution results in the two response layouts: records (default) and columnar."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from model_store.tabular import TabularModel


@dataclasses.dataclass(frozen=True)
class Selected:
    """Attributions, base values and outputs of each row's target class."""

    values: np.ndarray  # (rows, features)
    base: np.ndarray  # (rows,)
    output: np.ndarray  # (rows,)
    residual: np.ndarray  # (rows,)
    outputs: np.ndarray  # (rows, outputs): every class, for the tolerance
    targets: np.ndarray  # (rows,) class index
    predictions: list[dict[str, Any]]

    @classmethod
    def pick(
        cls,
        model: TabularModel,
        values: np.ndarray,
        base: np.ndarray,
        outputs: np.ndarray,
        probabilities: np.ndarray,
        targets: np.ndarray,
    ) -> Selected:
        rows = np.arange(len(targets))
        chosen = values[rows, :, targets]
        chosen_base = base[rows, targets]
        chosen_out = outputs[rows, targets]
        residual = chosen_out - chosen_base - chosen.sum(axis=1)
        return cls(
            chosen,
            chosen_base,
            chosen_out,
            residual,
            outputs,
            targets,
            model.describe_predictions(probabilities),
        )

    def target_labels(self, model: TabularModel) -> list[str | None]:
        if not model.is_classifier:
            return [None] * len(self.targets)
        return [model.classes[t] for t in self.targets]

    def group_matrix(self, model: TabularModel) -> np.ndarray | None:
        """Each row's attributions summed per manifest group (rows, groups), in the manifest's group order."""
        groups = model.manifest.groups
        if not groups:
            return None
        index = {name: j for j, name in enumerate(model.feature_order)}
        return np.column_stack(
            [self.values[:, [index[m] for m in members]].sum(axis=1) for members in groups.values()]
        )

    def group_sums(self, model: TabularModel) -> list[list[dict[str, Any]]] | None:
        """Per row, ``[{group, features, attribution}]`` (the records layout)."""
        matrix = self.group_matrix(model)
        if matrix is None:
            return None
        groups = model.manifest.groups.items()
        return [
            [
                {"group": g, "features": members, "attribution": value}
                for (g, members), value in zip(groups, row, strict=True)
            ]
            for row in matrix.tolist()
        ]


def record_results(
    model: TabularModel, records: list[dict[str, Any]], selected: Selected, top_k: int | None
) -> list[dict[str, Any]]:
    """Default layout: per row, ``[{feature, value, attribution}]`` sorted by magnitude."""
    order = model.feature_order
    chosen = selected.values
    ranking = np.argsort(-np.abs(chosen), axis=1, kind="stable")[
        :, : len(order) if top_k is None else int(top_k)
    ]
    ranked_names = np.asarray(order, dtype=object)[ranking].tolist()
    kept = np.take_along_axis(chosen, ranking, axis=1)
    ranked_values = kept.tolist()
    others = (chosen.sum(axis=1) - kept.sum(axis=1)).tolist() if top_k is not None else [0.0] * len(records)
    results = _common_fields(model, selected)
    groups = selected.group_sums(model)
    for i, (item, record) in enumerate(zip(results, records, strict=True)):
        item["attributions"] = [
            {"feature": name, "value": record[name], "attribution": value}
            for name, value in zip(ranked_names[i], ranked_values[i], strict=True)
        ]
        item["other_attribution"] = others[i]
        if groups is not None:
            item["groups"] = groups[i]
    return results


def columnar_results(model: TabularModel, selected: Selected) -> list[dict[str, Any]]:
    """Compact layout: per row, ``attribution_values`` in ``output.feature_order`` and, when the manifest
    declares groups, ``group_attribution_values`` in the order of ``output.groups`` (``columnar_groups``)."""
    results = _common_fields(model, selected)
    for item, row in zip(results, selected.values.tolist(), strict=True):
        item["attribution_values"] = row
    matrix = selected.group_matrix(model)
    if matrix is not None:
        for item, sums in zip(results, matrix.tolist(), strict=True):
            item["group_attribution_values"] = sums
    return results


def columnar_groups(model: TabularModel) -> list[dict[str, Any]] | None:
    """The columnar layout's group definitions, once per answer: ``[{group, features}]`` in manifest order."""
    groups = model.manifest.groups
    if not groups:
        return None
    return [{"group": g, "features": members} for g, members in groups.items()]


def _common_fields(model: TabularModel, selected: Selected) -> list[dict[str, Any]]:
    return [
        {
            "prediction": prediction,
            "target": target,
            "output_value": output,
            "base_value": base,
            "additivity_residual": residual,
        }
        for prediction, target, output, base, residual in zip(
            selected.predictions,
            selected.target_labels(model),
            selected.output.tolist(),
            selected.base.tolist(),
            selected.residual.tolist(),
            strict=True,
        )
    ]

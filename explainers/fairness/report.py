"""The fairness report of a classifier over rows: per protected attribute its group metrics with bootstrap
intervals, its flip test and its proxies; or, for a job's rows, each row's own part (its groups, decision
and flips), which a job's summary adds up."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from explainers.fairness import group_metrics as gm
from explainers.fairness.flip_test import flip_test, rescored
from explainers.fairness.groups import Attribute, bins_of, chosen, grouped
from explainers.fairness.proxies import proxies
from model_store.errors import InvalidInput

Records = list[dict[str, Any]]
GROUP_FIGURES = ("selection_rate", "mean_probability", "dppl", "di", *gm.OUTCOME_FIGURES)


@dataclasses.dataclass(frozen=True)
class Scored:
    """The rows' favourable probability, decision (favourable or not) and true outcome (or None)."""

    probability: np.ndarray
    decision: np.ndarray
    outcome: np.ndarray | None
    favourable: int


def favourable_of(model: Any) -> tuple[int, str]:
    """The favourable class (422 for a regressor, or a multiclass model that declares none)."""
    if not model.is_classifier:
        raise InvalidInput.field("method", "A fairness report needs a classifier.")
    label = model.manifest.favourable_class or (model.classes[1] if len(model.classes) == 2 else None)
    if label is None:
        raise InvalidInput.field("method", "A multiclass model needs a favourable_class in its manifest.")
    return model.class_index(label), label


def outcome_of(model: Any, opts: dict[str, Any], rows: int, favourable: str) -> np.ndarray | None:
    """The true outcomes as favourable or not (422 naming ``outcomes``, ``outcomes.<i>``, or with an
    outcome column ``instances.<i>.<column>``)."""
    labels, column = opts.get("outcomes"), opts.get("outcome_column")
    if labels is None:
        return None
    if len(labels) != rows:
        raise InvalidInput.field("outcomes", f"One outcome per row: {rows} rows, {len(labels)} outcomes.")
    for index, label in enumerate(labels):
        if label not in model.classes:
            raise InvalidInput.field(
                f"instances.{index}.{column}" if column else f"outcomes.{index}",
                f"Not a class; classes are {', '.join(model.classes)}.",
            )
    return np.asarray([label == favourable for label in labels], dtype=bool)


def with_outcome_column(instances: list[Any], options: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """With ``outcome_column``, the rows without it and their values as ``outcomes`` (a 422 naming
    ``instances.<i>.<column>`` for a row that lacks it or holds no text there)."""
    column = options.get("outcome_column")
    if not column:
        return instances, options
    rows, outcomes = [], []
    for index, instance in enumerate(instances):
        value = instance.get(column) if isinstance(instance, dict) else None
        if not isinstance(value, str):
            raise InvalidInput.field(f"instances.{index}.{column}", "The row's true outcome (a class label).")
        rows.append({k: v for k, v in instance.items() if k != column})
        outcomes.append(value)
    return rows, {**options, "outcomes": outcomes}


def scored(model: Any, encoded: np.ndarray, outcome: np.ndarray | None) -> Scored:
    column, _ = favourable_of(model)
    outputs = model.predict_encoded(encoded)
    return Scored(outputs[:, column], outputs.argmax(axis=1) == column, outcome, column)


def attributes_of(model: Any, records: Records, opts: dict[str, Any]) -> list[Attribute]:
    names = chosen(model, opts.get("attributes"))
    edges = bins_of(model, names, opts.get("bins") or {})
    return [grouped(model, name, records, edges.get(name)) for name in names]


def _group_rows(attribute: Attribute, table: dict, point: dict, draws: dict, min_size: int) -> list[dict]:
    out = []
    for index, label in enumerate(attribute.labels):
        size = int(point["n"][index]) if "n" in point else 0
        entry: dict[str, Any] = {
            "group": label,
            "value": attribute.values[index],
            "count": size,
            "too_small": size < min_size,
        }
        for name in GROUP_FIGURES:
            if name not in point:
                continue
            value = table.get(name, {}).get(label) if name in table else point[name][index]
            entry[name] = None if size == 0 or value is None or not np.isfinite(value) else float(value)
            entry[f"{name}_interval"] = gm.interval(draws[name][:, index]) if draws else [None, None]
        out.append(entry)
    return out


def _between(attribute: Attribute, point: dict, draws: dict, compared: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {
        "groups_compared": [g for g, c in zip(attribute.labels, compared, strict=True) if c]
    }
    for name in gm.BETWEEN:
        if name in point:
            value = point[name]
            out[name] = float(value) if np.isfinite(value) else None
            out[f"{name}_interval"] = gm.interval(draws[name]) if draws else [None, None]
    ratio = out.get("demographic_parity_ratio")
    out["four_fifths_flag"] = ratio is not None and ratio < gm.FOUR_FIFTHS
    return out


def group_section(
    attribute: Attribute, rows: Scored, draws: dict, compared: np.ndarray, min_size: int
) -> dict[str, Any]:
    """One attribute's groups and between-group figures: per-group rates from fairlearn's MetricFrame,
    DPPL, DI and the between-group figures from the same group sums the resamples use."""
    columns = gm.columns_of(rows.decision, rows.probability, rows.outcome)
    totals = gm.sums(attribute.codes, len(attribute.labels), np.ones(len(rows.decision)), columns)
    point = {**gm.figures(totals, compared, rows.outcome is not None), "n": totals["n"]}
    table = gm.point_estimates(attribute, rows.decision, rows.probability, rows.outcome)
    table = {k: v for k, v in table.items() if k not in ("count", "dppl", "di")}
    return {
        "attribute": attribute.name,
        "bins": attribute.bins,
        "groups": _group_rows(attribute, table, point, draws, min_size),
        "between": _between(attribute, point, draws, compared),
    }


def importance_ranking(model: Any) -> list[str]:
    """The features by global importance (mean |SHAP| over the reference data), computed once per loaded
    version."""
    from explainers.importance import global_importance

    found = model.derived.get_or_load(("fairness-importance",), lambda: global_importance(model))
    return [entry["feature"] for entry in found["features"]]


def report(model: Any, records: Records, encoded: np.ndarray, opts: dict[str, Any]) -> dict[str, Any]:
    """The whole report over ``records`` (``opts``: attributes, bins, outcomes, seed, resamples,
    min_group_size, offset, limit)."""
    attributes = attributes_of(model, records, opts)
    _, label = favourable_of(model)
    rows = scored(model, encoded, outcome_of(model, opts, len(records), label))
    min_size = int(opts["min_group_size"])
    compared = [np.bincount(a.codes, minlength=len(a.labels)) >= min_size for a in attributes]
    columns = gm.columns_of(rows.decision, rows.probability, rows.outcome)
    draws = gm.bootstrap(attributes, columns, compared, int(opts["resamples"]), int(opts["seed"]))
    flips, flipping = flip_test(model, records, attributes, rows.probability, rows.decision, rows.favourable)
    ranking = importance_ranking(model)
    sections = []
    for attribute, drawn, kept, flip in zip(attributes, draws, compared, flips, strict=True):
        section = group_section(attribute, rows, drawn, kept, min_size)
        section["flip_test"] = flip
        section["proxies"] = proxies(model, records, attribute, ranking)
        sections.append(section)
    offset, limit = int(opts["offset"]), int(opts["limit"])
    return {
        "rows": len(records),
        "favourable_class": label,
        "with_outcomes": rows.outcome is not None,
        "attributes": sections,
        "flipping_rows": {
            "total": len(flipping),
            "offset": offset,
            "limit": limit,
            "rows": flipping[offset : offset + limit],
        },
        "importance_top": ranking[:5],
    }


def row_parts(model: Any, records: Records, encoded: np.ndarray, opts: dict[str, Any]) -> list[dict]:
    """Each row's own part of a report (a job's rows): its groups, probability and decision, and each move
    of the flip test (the group it was moved to, its new probability, whether its decision flipped)."""
    attributes = attributes_of(model, records, opts)
    _, label = favourable_of(model)
    labels = opts.get("outcomes")
    rows = scored(model, encoded, outcome_of(model, opts, len(records), label))
    plans = rescored(model, records, attributes)
    moves: list[list[dict[str, Any]]] = [[] for _ in records]
    for attribute, plan in zip(attributes, plans, strict=True):
        after = plan["scores"][:, rows.favourable]
        decided = plan["scores"].argmax(axis=1) == rows.favourable
        for position, (row, target) in enumerate(
            zip(plan["rows"].tolist(), plan["targets"].tolist(), strict=True)
        ):
            moves[row].append(
                {
                    "attribute": attribute.name,
                    "to": attribute.labels[target],
                    "probability": float(after[position]),
                    "flipped": bool(decided[position] != rows.decision[row]),
                }
            )
    settings = {k: int(opts[k]) for k in ("seed", "resamples", "min_group_size")}
    parts = []
    for index in range(len(records)):
        part: dict[str, Any] = {
            "groups": {a.name: a.labels[int(a.codes[index])] for a in attributes},
            "probability": float(rows.probability[index]),
            "decision": bool(rows.decision[index]),
            "moves": moves[index],
            "settings": settings,
        }
        if labels is not None and rows.outcome is not None:
            part["outcome"] = str(labels[index])
            part["outcome_favourable"] = bool(rows.outcome[index])
        parts.append({"row": part})
    return parts

"""The counterfactual flip test: every row with a protected attribute set to each other group's value
(everything else held), re-scored in one batch through the model's own path (encoding, then the estimator).

Per ordered pair of groups (from the row's group to another): the rows moved, the share whose decision
flips, the mean and the largest change in the favourable probability; and the flipping rows themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainers.fairness.groups import Attribute

Records = list[dict[str, Any]]


def moved(records: Records, attribute: Attribute) -> tuple[Records, np.ndarray, np.ndarray]:
    """Each row once per other group (never into the missing values' group), with the attribute set to that
    group's value: the varied rows, and for each the row's index and the group it was moved to."""
    groups = len(attribute.labels)
    rows, targets = [], []
    for index, (_row, code) in enumerate(zip(records, attribute.codes.tolist(), strict=True)):
        for target in range(groups):
            if target not in (code, attribute.missing):
                rows.append(index)
                targets.append(target)
    varied = [{**records[i], attribute.name: attribute.values[t]} for i, t in zip(rows, targets, strict=True)]
    return varied, np.asarray(rows, dtype=np.int64), np.asarray(targets, dtype=np.int64)


def rescored(model: Any, records: Records, attributes: list[Attribute]) -> list[dict[str, Any]]:
    """Every attribute's moved rows scored in one model call: per attribute its rows, targets and the
    favourable probability of each moved row."""
    plans = [moved(records, attribute) for attribute in attributes]
    varied = [row for plan in plans for row in plan[0]]
    scored = model.predict_encoded(model.encode(varied)) if varied else np.zeros((0, len(model.classes)))
    out, start = [], 0
    for rows_of_plan, rows, targets in plans:
        stop = start + len(rows_of_plan)
        out.append({"rows": rows, "targets": targets, "scores": scored[start:stop]})
        start = stop
    return out


def pairs(
    attribute: Attribute, plan: dict[str, Any], probability: np.ndarray, decision: np.ndarray, favourable: int
) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """Per ordered pair of groups its figures; and the moved rows' new probabilities and whether they flip."""
    rows, targets = plan["rows"], plan["targets"]
    after = plan["scores"][:, favourable] if len(rows) else np.zeros(0)
    decided = plan["scores"].argmax(axis=1) == favourable if len(rows) else np.zeros(0, dtype=bool)
    flipped = decided != decision[rows]
    change = after - probability[rows]
    sources = attribute.codes[rows]
    out = []
    for source, source_label in enumerate(attribute.labels):
        for target, target_label in enumerate(attribute.labels):
            chosen = (sources == source) & (targets == target)
            if source == target or not chosen.any():
                continue
            largest = int(np.argmax(np.abs(change[chosen])))
            out.append(
                {
                    "from": source_label,
                    "to": target_label,
                    "rows": int(chosen.sum()),
                    "flips": int(flipped[chosen].sum()),
                    "flip_rate": float(flipped[chosen].mean()),
                    "mean_change": float(change[chosen].mean()),
                    "largest_change": float(change[chosen][largest]),
                }
            )
    return out, after, flipped


def flip_rows(
    attribute: Attribute,
    plan: dict[str, Any],
    after: np.ndarray,
    flipped: np.ndarray,
    probability: np.ndarray,
) -> list[dict[str, Any]]:
    """The moved rows whose decision flips, in row order."""
    out = []
    for position in np.flatnonzero(flipped).tolist():
        row, target = int(plan["rows"][position]), int(plan["targets"][position])
        out.append(
            {
                "row": row,
                "attribute": attribute.name,
                "from": attribute.labels[int(attribute.codes[row])],
                "to": attribute.labels[target],
                "value": attribute.values[target],
                "probability_before": float(probability[row]),
                "probability_after": float(after[position]),
            }
        )
    return out


def flip_test(
    model: Any,
    records: Records,
    attributes: list[Attribute],
    probability: np.ndarray,
    decision: np.ndarray,
    favourable: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per attribute its pairs and overall flip rate; and all flipping rows (row, then attribute order)."""
    plans = rescored(model, records, attributes)
    summaries, flipping = [], []
    for attribute, plan in zip(attributes, plans, strict=True):
        figures, after, flipped = pairs(attribute, plan, probability, decision, favourable)
        rows_flipping = np.unique(plan["rows"][flipped]) if len(flipped) else np.zeros(0)
        summaries.append(
            {
                "attribute": attribute.name,
                "moves": len(flipped),
                "flip_rate": float(flipped.mean()) if len(flipped) else 0.0,
                "rows_flipping": len(rows_flipping),
                "pairs": figures,
            }
        )
        flipping.extend(flip_rows(attribute, plan, after, flipped, probability))
    order = {attribute.name: i for i, attribute in enumerate(attributes)}
    flipping.sort(key=lambda f: (f["row"], order[f["attribute"]]))
    return summaries, flipping

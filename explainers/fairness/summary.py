"""A fairness job's summary: each row's part (``report.row_parts``) added into group sums, and the report's
figures from them once the job is done. Every group a row could be moved into is listed, with count 0 when
no row falls in it; a numeric attribute's ``missing`` group only when a row is missing the value.

The intervals are a Poisson bootstrap of the job's rows (``explainers.fairness.poisson``): each chunk adds,
per group, its rows' sums weighted by each row's fixed Poisson(1) count in each resample, so the resampled
sums are those of resampled rows, the same for every split of the job into chunks, and repeat with the seed.
Every figure (selection rate, mean probability, DPPL, DI and, with an outcome column, the true and false
positive rates, precision, accuracy and equalized odds) is recomputed on each resample from its sums, as the
request's bootstrap does. The resamples are drawn once per row for all attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainers.fairness import group_metrics as gm
from explainers.fairness import poisson

Acc = dict[str, Any]
SHOWN = ("selection_rate", "mean_probability", "dppl", "di")
INTERVAL_METHOD = "poisson_bootstrap"
NO_INTERVALS = "none: some rows were summed before the Poisson bootstrap"
COLUMNS = ("n", "positive", "probability")
OUTCOME_COLUMNS = ("actual", "tp", "correct")
DECISION_CELLS = ("positive_n", "negative_n", "positive_probability", "negative_probability")
"""Sums stored before the Poisson bootstrap: per group and decision, its rows and probabilities."""


def _add(node: dict[str, Any], key: str, amount: float) -> None:
    node[key] = node.get(key, 0.0) + amount


def _add_list(node: dict[str, Any], key: str, amounts: np.ndarray) -> None:
    node[key] = (amounts + node[key] if key in node else amounts).tolist()


def _columns(parts: list[dict[str, Any]]) -> np.ndarray:
    """Per row its summed columns: 1, decision, probability and, with outcomes, actual, tp, correct."""
    decision = np.asarray([p["decision"] for p in parts], dtype=float)
    probability = np.asarray([p["probability"] for p in parts], dtype=float)
    columns = [np.ones(len(parts)), decision, probability]
    if all("outcome_favourable" in p for p in parts):
        actual = np.asarray([p["outcome_favourable"] for p in parts], dtype=float)
        columns += [actual, decision * actual, (decision == actual).astype(float)]
    return np.stack(columns, axis=1)


def accumulate_rows(acc: Acc, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """Add a chunk's row parts (with their row numbers in the job): per attribute and group the plain sums
    and the resampled sums, each move of the flip test, the job's settings (as counts) and how many rows
    carried an outcome."""
    parts = [result["row"] for _, result in rows]
    fair = acc.setdefault("fairness", {})
    settings = parts[0]["settings"]
    for part in parts:
        for key, value in part["settings"].items():
            _add(fair.setdefault("settings", {}).setdefault(key, {}), str(value), 1.0)
    columns = _columns(parts)
    names = [*COLUMNS, *OUTCOME_COLUMNS][: columns.shape[1]]
    counted = fair.setdefault("rows", {})
    _add(counted, "total", float(len(parts)))
    _add(counted, "with_outcome", float(len(parts) if columns.shape[1] > len(COLUMNS) else 0))
    drawn = poisson.weights(
        int(settings["seed"]), np.asarray([row for row, _ in rows]), int(settings["resamples"])
    )
    for attribute in parts[0]["groups"]:
        labels = np.asarray([p["groups"][attribute] for p in parts], dtype=object)
        groups = fair.setdefault("groups", {}).setdefault(attribute, {})
        for label in sorted(set(labels.tolist())):
            mask = labels == label
            cell = groups.setdefault(label, {})
            resampled = cell.setdefault("resampled", {})
            plain, boot = columns[mask].sum(axis=0), columns[mask].T @ drawn[mask]
            for index, name in enumerate(names):
                _add(cell, name, float(plain[index]))
                _add_list(resampled, name, boot[index])
    _add_moves(fair, parts)


def _add_moves(fair: dict[str, Any], parts: list[dict[str, Any]]) -> None:
    for part in parts:
        for move in part["moves"]:
            fair["groups"][move["attribute"]].setdefault(move["to"], {})  # a group no row falls in: count 0
            source = part["groups"][move["attribute"]]
            pair = fair.setdefault("moves", {}).setdefault(move["attribute"], {}).setdefault(source, {})
            entry = pair.setdefault(move["to"], {})
            _add(entry, "rows", 1.0)
            _add(entry, "flips", 1.0 if move["flipped"] else 0.0)
            _add(entry, "change", move["probability"] - part["probability"])


def _from_decision_cells(cell: dict[str, Any]) -> dict[str, Any]:
    """A group's sums with those stored before the Poisson bootstrap added in (they have no resamples)."""
    if not any(key in cell for key in DECISION_CELLS):
        return cell
    positive, negative = cell.get("positive_n", 0.0), cell.get("negative_n", 0.0)
    probability = cell.get("positive_probability", 0.0) + cell.get("negative_probability", 0.0)
    return {
        **cell,
        "n": cell.get("n", 0.0) + positive + negative,
        "positive": cell.get("positive", 0.0) + positive,
        "probability": cell.get("probability", 0.0) + probability,
    }


def _setting(fair: dict[str, Any], key: str) -> int:
    counts = fair.get("settings", {}).get(key, {})
    return int(max(counts, key=counts.get)) if counts else 0


def _sums(groups: dict[str, Any], labels: list[str], names: tuple[str, ...], resamples: int) -> tuple:
    """The plain sums (arrays over groups) and the resampled ones (arrays of groups by resamples)."""
    plain = {name: np.asarray([groups[g].get(name, 0.0) for g in labels], dtype=float) for name in names}
    if not resamples:
        return plain, {name: np.zeros((len(labels), 0)) for name in names}
    resampled = {
        name: np.asarray(
            [groups[g].get("resampled", {}).get(name) or [0.0] * resamples for g in labels], dtype=float
        ).reshape(len(labels), resamples)
        for name in names
    }
    return plain, resampled


def attribute_summary(
    name: str,
    groups: dict[str, Any],
    moves: dict[str, Any],
    settings: tuple[int, int, int],
    outcomes: bool,
) -> dict[str, Any]:
    _, resamples, min_size = settings
    labels = sorted(groups)
    names = (*COLUMNS, *OUTCOME_COLUMNS) if outcomes else COLUMNS
    plain, resampled = _sums(groups, labels, names, resamples)
    compared = plain["n"] >= min_size
    point = gm.figures(plain, compared, outcomes)
    drawn = [
        gm.figures({k: v[:, b] for k, v in resampled.items()}, compared, outcomes) for b in range(resamples)
    ]
    stacked = {k: np.asarray([d[k] for d in drawn], dtype=float) for k in point} if drawn else {}
    shown = (*SHOWN, *gm.OUTCOME_FIGURES) if outcomes else SHOWN
    rows = []
    for index, label in enumerate(labels):
        size = int(plain["n"][index])
        entry: dict[str, Any] = {"group": label, "count": size, "too_small": bool(not compared[index])}
        for figure in shown:
            value = point[figure][index]
            entry[figure] = float(value) if size and np.isfinite(value) else None
            entry[f"{figure}_interval"] = gm.interval(stacked[figure][:, index]) if stacked else [None, None]
        rows.append(entry)
    between: dict[str, Any] = {"groups_compared": [g for g, c in zip(labels, compared, strict=True) if c]}
    for figure in gm.BETWEEN:
        if figure not in point:
            continue
        value = point[figure]
        between[figure] = float(value) if np.isfinite(value) else None
        between[f"{figure}_interval"] = gm.interval(stacked[figure]) if stacked else [None, None]
    ratio = between["demographic_parity_ratio"]
    between["four_fifths_flag"] = ratio is not None and ratio < gm.FOUR_FIFTHS
    return {"attribute": name, "groups": rows, "between": between, "flip_test": flip_summary(moves)}


def flip_summary(moves: dict[str, Any]) -> dict[str, Any]:
    pairs, total, flips = [], 0.0, 0.0
    for source in sorted(moves):
        for target in sorted(moves[source]):
            entry = moves[source][target]
            total, flips = total + entry["rows"], flips + entry["flips"]
            pairs.append(
                {
                    "from": source,
                    "to": target,
                    "rows": int(entry["rows"]),
                    "flips": int(entry["flips"]),
                    "flip_rate": entry["flips"] / entry["rows"],
                    "mean_change": entry["change"] / entry["rows"],
                }
            )
    return {"moves": int(total), "flip_rate": flips / total if total else 0.0, "pairs": pairs}


def finalize(acc: Acc) -> dict[str, Any]:
    """The job's fairness figures (none before a row is done). The outcome figures need every row's
    outcome."""
    fair = acc.get("fairness")
    if not fair:
        return {}
    seed, resamples = _setting(fair, "seed"), _setting(fair, "resamples")
    counted = fair.get("rows", {})
    outcomes = bool(counted.get("total")) and counted.get("with_outcome") == counted.get("total")
    stored = fair.get("groups", {})
    earlier = any(k in cell for groups in stored.values() for cell in groups.values() for k in DECISION_CELLS)
    if earlier:  # the point figures stay exact; the resamples cover only some rows, so no intervals
        stored = {a: {g: _from_decision_cells(c) for g, c in groups.items()} for a, groups in stored.items()}
    settings = (seed, 0 if earlier else resamples, _setting(fair, "min_group_size"))
    attributes = [
        attribute_summary(name, groups, fair.get("moves", {}).get(name, {}), settings, outcomes)
        for name, groups in sorted(stored.items())
    ]
    return {
        "fairness": {
            "seed": seed,
            "resamples": resamples,
            "interval_method": NO_INTERVALS if earlier else INTERVAL_METHOD,
            "with_outcomes": outcomes,
            "attributes": attributes,
        }
    }

"""A fairness job's summary: each row's part (``report.row_parts``) added into group sums, and the report's
figures from them once the job is done. Every group a row could be moved into is listed, with count 0 when
no row falls in it; a numeric attribute's ``missing`` group only when a row is missing the value.

The sums are additive (a job adds one accumulator per chunk), so the intervals resample the job's rows by
their cells: per group, the favourable and unfavourable decisions are drawn together from a multinomial over
all rows (``numpy.random.default_rng(seed)``), which gives every count-based figure exactly the distribution
that resampling the rows gives; a resampled cell's sum of probabilities is drawn from its normal
approximation (its count times its mean, plus its standard deviation times the square root of its count
times a standard normal draw).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from explainers.fairness import group_metrics as gm

Acc = dict[str, Any]
SHOWN = ("selection_rate", "mean_probability", "dppl", "di")
INTERVAL_METHOD = "cell_multinomial_normal"
"""How the summary's intervals resample (not a row bootstrap): decision cells from a multinomial, a cell's
probability sum from its normal approximation."""


def _add(node: dict[str, Any], key: str, amount: float) -> None:
    node[key] = node.get(key, 0.0) + amount


def accumulate(acc: Acc, result: dict[str, Any]) -> None:
    """Add one row's part: its cell of each attribute, each move, and the job's settings (as counts)."""
    row = result["row"]
    fair = acc.setdefault("fairness", {})
    decision, probability = row["decision"], row["probability"]
    side = "positive" if decision else "negative"
    for name, group in row["groups"].items():
        cell = fair.setdefault("groups", {}).setdefault(name, {}).setdefault(group, {})
        _add(cell, f"{side}_n", 1.0)
        _add(cell, f"{side}_probability", probability)
        _add(cell, f"{side}_probability2", probability * probability)
    for move in row["moves"]:
        fair["groups"][move["attribute"]].setdefault(move["to"], {})  # a group no row falls in: count 0
        source = row["groups"][move["attribute"]]
        pair = fair.setdefault("moves", {}).setdefault(move["attribute"], {}).setdefault(source, {})
        entry = pair.setdefault(move["to"], {})
        _add(entry, "rows", 1.0)
        _add(entry, "flips", 1.0 if move["flipped"] else 0.0)
        _add(entry, "change", move["probability"] - probability)
    for key, value in row["settings"].items():
        _add(fair.setdefault("settings", {}).setdefault(key, {}), str(value), 1.0)


def _setting(fair: dict[str, Any], key: str) -> int:
    counts = fair.get("settings", {}).get(key, {})
    return int(max(counts, key=counts.get)) if counts else 0


def _cells(groups: dict[str, Any], labels: list[str], side: str, what: str) -> np.ndarray:
    return np.asarray([groups[g].get(f"{side}_{what}", 0.0) for g in labels], dtype=float)


def _resampled(cells: dict[str, np.ndarray], rng: np.random.Generator, resamples: int) -> list[dict]:
    """Per resample the group sums: decision cells drawn from a multinomial, probability sums from the
    normal approximation of each drawn cell."""
    counts = np.concatenate([cells["positive_n"], cells["negative_n"]])
    total = int(counts.sum())
    draws = rng.multinomial(total, counts / total, size=resamples)
    means = {s: cells[f"{s}_probability"] / np.maximum(cells[f"{s}_n"], 1) for s in ("positive", "negative")}
    spread = {
        s: np.sqrt(np.maximum(cells[f"{s}_probability2"] / np.maximum(cells[f"{s}_n"], 1) - means[s] ** 2, 0))
        for s in ("positive", "negative")
    }
    groups = len(cells["positive_n"])
    out = []
    for draw in draws:
        noise = rng.standard_normal(2 * groups)
        sums = {}
        for offset, s in ((0, "positive"), (groups, "negative")):
            k = draw[offset : offset + groups].astype(float)
            sums[s] = (k, k * means[s] + np.sqrt(k) * spread[s] * noise[offset : offset + groups])
        out.append(
            {
                "n": sums["positive"][0] + sums["negative"][0],
                "positive": sums["positive"][0],
                "probability": sums["positive"][1] + sums["negative"][1],
            }
        )
    return out


def attribute_summary(
    name: str,
    groups: dict[str, Any],
    moves: dict[str, Any],
    settings: tuple[int, int, int],
) -> dict[str, Any]:
    seed, resamples, min_size = settings
    labels = sorted(groups)
    cells = {
        f"{s}_{w}": _cells(groups, labels, s, w)
        for s in ("positive", "negative")
        for w in ("n", "probability", "probability2")
    }
    point_sums = {
        "n": cells["positive_n"] + cells["negative_n"],
        "positive": cells["positive_n"],
        "probability": cells["positive_probability"] + cells["negative_probability"],
    }
    compared = point_sums["n"] >= min_size
    point = gm.figures(point_sums, compared, False)
    drawn = [
        gm.figures(s, compared, False) for s in _resampled(cells, np.random.default_rng(seed), resamples)
    ]
    stacked = {k: np.asarray([d[k] for d in drawn], dtype=float) for k in point} if drawn else {}
    rows = []
    for index, label in enumerate(labels):
        entry: dict[str, Any] = {
            "group": label,
            "count": int(point_sums["n"][index]),
            "too_small": bool(not compared[index]),
        }
        for figure in SHOWN:
            value = point[figure][index]
            entry[figure] = float(value) if np.isfinite(value) else None
            entry[f"{figure}_interval"] = gm.interval(stacked[figure][:, index]) if stacked else [None, None]
        rows.append(entry)
    between: dict[str, Any] = {"groups_compared": [g for g, c in zip(labels, compared, strict=True) if c]}
    for figure in ("demographic_parity_difference", "demographic_parity_ratio"):
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
    """The job's fairness figures (none before a row is done)."""
    fair = acc.get("fairness")
    if not fair:
        return {}
    settings = (_setting(fair, "seed"), _setting(fair, "resamples"), _setting(fair, "min_group_size"))
    attributes = [
        attribute_summary(name, groups, fair.get("moves", {}).get(name, {}), settings)
        for name, groups in sorted(fair.get("groups", {}).items())
    ]
    return {
        "fairness": {
            "seed": settings[0],
            "resamples": settings[1],
            "interval_method": INTERVAL_METHOD,
            "attributes": attributes,
        }
    }

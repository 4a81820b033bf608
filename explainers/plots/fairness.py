"""The picture of a fairness report: per protected attribute, the selection rate of each group with its 95%
interval (groups too small to compare drawn hollow), and the flip rate of each ordered pair of groups; a job
row's part as the favourable probability after each move of the flip test."""

from __future__ import annotations

from typing import Any

import numpy as np

from explainers.narratives import Names

MAX_ATTRIBUTES = 3
MAX_PAIRS = 12


def _rates(ax: Any, section: dict[str, Any], names: Names) -> None:
    groups = section["groups"]
    y = np.arange(len(groups), dtype=float)
    rates = [g.get("selection_rate") or 0.0 for g in groups]
    low = [
        rate - (g["selection_rate_interval"][0] if g["selection_rate_interval"][0] is not None else rate)
        for g, rate in zip(groups, rates, strict=True)
    ]
    high = [
        (g["selection_rate_interval"][1] if g["selection_rate_interval"][1] is not None else rate) - rate
        for g, rate in zip(groups, rates, strict=True)
    ]
    colours = ["white" if g["too_small"] else "#4393c3" for g in groups]
    ax.barh(y, rates, xerr=[low, high], color=colours, edgecolor="#2166ac", capsize=3)
    ax.set_yticks(y, [f"{g['group']} (n={g['count']})" for g in groups], fontsize=9)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ratio = section["between"].get("demographic_parity_ratio")
    flag = " - below four fifths" if section["between"].get("four_fifths_flag") else ""
    shown = "n/a" if ratio is None else f"{ratio:.2f}"
    ax.set_title(f"{names.display(section['attribute'])}: selection rate (ratio {shown}{flag})", fontsize=10)


def _flips(ax: Any, section: dict[str, Any]) -> None:
    pairs = (section.get("flip_test") or {}).get("pairs", [])[:MAX_PAIRS]
    y = np.arange(len(pairs), dtype=float)
    ax.barh(y, [p["flip_rate"] for p in pairs], color="#d6604d")
    ax.set_yticks(y, [f"{p['from']} -> {p['to']}" for p in pairs], fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_title("flip rate when only this attribute changes", fontsize=10)


def draw(figure: Any, result: dict[str, Any], envelope: dict[str, Any], names: Names) -> None:
    if "row" in result:
        _row(figure, result["row"], names)
        return
    sections = result["attributes"][:MAX_ATTRIBUTES]
    axes = figure.subplots(len(sections), 2, squeeze=False)
    for (rates, flips), section in zip(axes, sections, strict=True):
        _rates(rates, section, names)
        _flips(flips, section)
    more = len(result["attributes"]) - len(sections)
    note = f" ({more} more attribute(s) in the record)" if more else ""
    figure.suptitle(f"Fairness of {envelope['model']['name']} over {result['rows']} rows{note}", fontsize=12)


def _row(figure: Any, row: dict[str, Any], names: Names) -> None:
    ax = figure.subplots()
    moves = row["moves"][:MAX_PAIRS]
    y = np.arange(len(moves), dtype=float)
    ax.barh(
        y, [m["probability"] for m in moves], color=["#d6604d" if m["flipped"] else "#9e9e9e" for m in moves]
    )
    ax.axvline(row["probability"], color="#2166ac", label="as sent")
    ax.set_yticks(y, [f"{names.display(m['attribute'])} = {m['to']}" for m in moves], fontsize=9)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("favourable probability")
    ax.legend(loc="best", fontsize=9)
    ax.set_title("One row moved across protected groups (red: the decision flips)", fontsize=11)

"""Pictures of tabular explanations: a SHAP waterfall, a before/after table of counterfactuals, ranked
adverse-action reasons, and global importance as bars or a beeswarm. Imported only when drawing."""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from explainers.narratives import Names, attribution_items, fixed, ranked_options, signed, space_phrase

POSITIVE = "#d6604d"  # pushes toward the target class (or raises the prediction)
NEGATIVE = "#4393c3"
CHANGED = "#fdd49e"
MAX_FEATURES = 9
MAX_OPTIONS = 6
MAX_IMPORTANCE = 15
MAX_SWARM = 10
LABEL_CHARS = 60
WRAP_CHARS = 46
CELL_CHARS = 24


def short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wrapped(text: str, width: int = WRAP_CHARS) -> str:
    """At most two lines of ``width`` characters (the rest cut with an ellipsis)."""
    lines = textwrap.wrap(text, width, break_long_words=True) or [""]
    if len(lines) > 2:
        lines = [lines[0], short(" ".join(lines[1:]), width)]
    return "\n".join(lines)


def footnote(figure: Figure, text: str) -> None:
    """A line of text under the axes (the layout leaves room for it)."""
    figure.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))  # type: ignore[union-attr,call-arg]
    figure.text(0.5, 0.01, text, ha="center", va="bottom", fontsize=10)


def model_title(envelope: dict[str, Any]) -> str:
    return f"{envelope['model']['name']} v{envelope['model']['version']}"


def prediction_label(prediction: dict[str, Any]) -> str:
    if "label" in prediction:
        label = prediction["label"]
        return f"'{label}' (probability {fixed(prediction['probabilities'][label], 'probability')})"
    return fixed(prediction["value"], "attribution")


def message(figure: Figure, title: str, text: str) -> None:
    """A picture that says there is nothing to draw, and why."""
    ax = figure.add_subplot()
    ax.axis("off")
    ax.set_title(title, fontsize=13)
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, wrap=True, transform=ax.transAxes)


def _bar_labels(ax: Any, lefts: list[float], widths: list[float]) -> None:
    for y, (left, width) in enumerate(zip(lefts, widths, strict=True)):
        end = left + width
        align = "left" if width >= 0 else "right"
        ax.text(end, y, f" {signed(width, 'attribution')} ", va="center", ha=align, fontsize=10)


def waterfall(
    figure: Figure,
    result: dict[str, Any],
    envelope: dict[str, Any],
    names: Names,
    values: dict[str, Any] | None = None,
) -> None:
    """Base value -> this case's output: the largest attributions one by one, the rest summed."""
    items = attribution_items(result, envelope)
    shown, rest = items[:MAX_FEATURES], items[MAX_FEATURES:]
    others = len(rest) + max(len(names.specs) - len(items), 0)
    rows = []
    for feature, value, attribution in shown:
        value = value if "attributions" in result else (values or {}).get(feature)
        has_value = value is not None or "attributions" in result
        label = names.feature_value(feature, value) if has_value else names.display(feature)
        rows.append((wrapped(label), attribution))
    if others:
        rest_sum = sum(a for *_, a in rest) + float(result.get("other_attribution") or 0.0)
        rows.append((f"{others} other features", rest_sum))
    rows.reverse()  # drawn from the bottom: the smallest first, the largest ends at the output
    base, output = float(result["base_value"]), float(result["output_value"])
    widths = [a for _, a in rows]
    lefts = list(base + np.concatenate([[0.0], np.cumsum(widths)[:-1]]))
    ax = figure.add_subplot()
    colours = [POSITIVE if w >= 0 else NEGATIVE for w in widths]
    ax.barh(range(len(rows)), widths, left=lefts, color=colours, height=0.65)
    _bar_labels(ax, lefts, widths)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=10)
    ax.axvline(base, color="grey", linestyle="--", linewidth=1)
    ax.axvline(output, color="black", linestyle=":", linewidth=1)
    ends = [*lefts, base + sum(widths), base, output]
    low, high = min(ends), max(ends)
    pad = 0.22 * ((high - low) or 1.0)
    ax.set_xlim(low - pad, high + pad)  # bars' sticky edges would defeat margins
    ax.legend(
        [Line2D([], [], color="grey", linestyle="--"), Line2D([], [], color="black", linestyle=":")],
        ["base value", "this case's output"],
        loc="upper right",
        fontsize=9,
    )
    target = result.get("target")
    ax.set_xlabel(f"SHAP attribution, {space_phrase(envelope['output']['space'], target)}", fontsize=11)
    ax.set_title(
        f"{model_title(envelope)}: {prediction_label(result['prediction'])}\n"
        f"base value {fixed(base, 'attribution')} -> output {fixed(output, 'attribution')}",
        fontsize=12,
    )


def counterfactual_table(
    figure: Figure,
    result: dict[str, Any],
    envelope: dict[str, Any],
    names: Names,
    scales: dict[str, float],
) -> None:
    """Before (this case) and after (each option, least effort first) for every changed feature."""
    title = f"{model_title(envelope)}: counterfactuals for {prediction_label(result['prediction'])}"
    desired = envelope["output"]["desired"]
    if result["status"] != "ok":
        reason = result.get("reason") or "this case already has the desired outcome"
        message(figure, title, f"No counterfactual to show: {reason}.")
        return
    options = ranked_options(result, scales)
    shown = options[:MAX_OPTIONS]
    features: list[str] = []
    for _, _, changes in shown:
        features += [c["feature"] for _, c in changes if c["feature"] not in features]
    columns = [result["instance"]] + [cf["instance"] for _, cf, _ in shown]
    text = [[short(names.value(f, row[f]), CELL_CHARS) for row in columns] for f in features]
    colours = [
        ["white"] + [CHANGED if row[f] != result["instance"][f] else "white" for row in columns[1:]]
        for f in features
    ]
    predictions = [result["prediction"]] + [cf["prediction"] for _, cf, _ in shown]
    text.append([prediction_label(p).replace(" (probability ", "\n").rstrip(")") for p in predictions])
    colours.append(["white"] * len(columns))
    ax = figure.add_subplot()
    ax.axis("off")
    table = ax.table(
        cellText=text,
        cellColours=colours,
        rowLabels=[short(names.display(f), 32) for f in features] + ["prediction"],
        colLabels=["this case"]
        + [f"option {k}\neffort {fixed(e, 'effort')}" for k, (e, _, _) in enumerate(shown, start=1)],
        cellLoc="center",
        loc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    table.scale(1, 2.4)
    goal = f"'{desired['class']}'" if "class" in desired else "the desired range"
    note = (
        f"Changed values are shaded; options reach {goal}, least effort first (effort: MAD-scaled distance)."
    )
    if len(options) > MAX_OPTIONS:
        note += f" {len(options) - MAX_OPTIONS} more option(s) not shown."
    ax.set_title(title, fontsize=12)
    footnote(figure, note)


def reasons_bars(figure: Figure, result: dict[str, Any], envelope: dict[str, Any], names: Names) -> None:
    """The adverse-action reasons, rank 1 on top, as their (negative) SHAP attributions."""
    favourable = envelope["output"]["target"]
    title = f"{model_title(envelope)}: {prediction_label(result['prediction'])}"
    if result["status"] != "declined" or not result["reasons"]:
        message(
            figure, title, f"No adverse-action reasons: nothing pushed this case away from '{favourable}'."
        )
        return
    reasons = list(reversed(result["reasons"]))
    values = [float(r["attribution"]) for r in reasons]
    fit = wrapped if len(reasons) <= 6 else short  # room for two lines of reason text each
    labels = [
        f"{r['rank']}. {fit(r['text'], WRAP_CHARS)}\n"
        + short(names.feature_value(r["feature"], r["value"]), WRAP_CHARS)
        for r in reasons
    ]
    ax = figure.add_subplot()
    ax.barh(range(len(reasons)), values, color=NEGATIVE, height=0.6)
    _bar_labels(ax, [0.0] * len(values), values)
    ax.set_yticks(range(len(reasons)), labels, fontsize=10)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlim(min(values) * 1.25, 0)
    space = space_phrase(envelope["output"]["space"], favourable)
    ax.set_xlabel(f"SHAP attribution, {space} (negative: away from '{favourable}')", fontsize=11)
    ax.set_title(f"{title}\nadverse-action reasons, most important first", fontsize=12)
    excluded = [
        f"{names.display(p['feature'])} (would rank {p['would_rank']})" for p in result["protected_excluded"]
    ]
    if excluded:
        footnote(figure, "Protected features are never reasons: " + ", ".join(excluded))


def importance_bars(figure: Figure, importance: dict[str, Any], names: Names, target: str | None) -> None:
    """Mean |SHAP| per feature over the reference rows, largest on top."""
    features = importance["features"][:MAX_IMPORTANCE][::-1]
    values = [float(f["importance"]) for f in features]
    ax = figure.add_subplot()
    ax.barh(range(len(features)), values, color=POSITIVE, height=0.65)
    for y, value in enumerate(values):
        ax.text(value, y, f" {fixed(value, 'attribution')}", va="center", ha="left", fontsize=10)
    ax.set_yticks(range(len(features)), [short(names.display(f["feature"])) for f in features], fontsize=10)
    ax.set_xlim(0, max(values, default=1.0) * 1.15 or 1.0)
    space = space_phrase(importance["output"]["space"], target)
    ax.set_xlabel(f"mean |SHAP attribution|, {space}", fontsize=11)
    rows = importance["method"]["params"].get("rows")
    ax.set_title(
        f"{model_title(importance)}: global importance\nmean |SHAP| over {rows} reference rows "
        f"({importance['method']['algorithm']} SHAP)",
        fontsize=12,
    )
    hidden = len(importance["features"]) - len(features)
    if hidden > 0:
        footnote(figure, f"{hidden} less important features not shown")


CORRELATION_LABELS = {
    "pearson": ("Pearson r", "numeric_features"),
    "spearman": ("Spearman rho", "numeric_features"),
    "cramers_v": ("Cramer's V (bias-corrected)", "categorical_features"),
}
MAX_ANNOTATED = 12


def correlation_heatmap(
    figure: Figure, profile: dict[str, Any], names: Names, method: str, title: str
) -> None:
    """One of the profile's correlation matrices over the reference rows, values written in small ones."""
    label, features_key = CORRELATION_LABELS[method]
    features = profile["correlations"][features_key]
    matrix = np.array(profile["correlations"][method], dtype=float).reshape(len(features), len(features))
    ax = figure.add_subplot()
    if not features:
        message(figure, title, f"No {features_key.split('_')[0]} features to correlate.")
        return
    signed_scale = method != "cramers_v"
    image = ax.imshow(
        np.ma.masked_invalid(matrix),
        cmap="RdBu_r" if signed_scale else "viridis",
        vmin=-1.0 if signed_scale else 0.0,
        vmax=1.0,
        interpolation="nearest",
    )
    labels = [short(names.display(f), 28) for f in features]
    size = max(6.0, min(10.0, 220.0 / len(features)))
    ax.set_xticks(range(len(features)), labels, rotation=60, ha="right", fontsize=size)
    ax.set_yticks(range(len(features)), labels, fontsize=size)
    if len(features) <= MAX_ANNOTATED:
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                colour = "white" if abs(value) > 0.6 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=size, color=colour)
    figure.colorbar(image, ax=ax, label=label, shrink=0.85)
    ax.set_title(f"{title}: {label} over {profile['rows']} reference rows", fontsize=12)


def _swarm_offsets(x: np.ndarray, width: float = 0.38, bins: int = 120) -> np.ndarray:
    """Deterministic vertical offsets: points in the same x bin alternate above and below the line."""
    span = float(np.ptp(x)) or 1.0
    slots = np.floor((x - x.min()) / span * bins).astype(int)
    offsets = np.zeros(len(x))
    seen: dict[int, int] = {}
    for i in np.argsort(x, kind="stable"):
        k = seen.get(int(slots[i]), 0)
        seen[int(slots[i])] = k + 1
        offsets[i] = (1 if k % 2 else -1) * ((k + 1) // 2) * 0.04
    return np.clip(offsets, -width, width)


def _value_colours(column: list[Any]) -> np.ndarray | None:
    """Each row's value as its rank in [0, 1] (numbers and booleans); None for categories."""
    if not all(isinstance(v, int | float) and v is not None for v in column):
        return None
    values = np.asarray(column, dtype=float)
    ranks = values.argsort(kind="stable").argsort(kind="stable")
    return ranks / max(len(values) - 1, 1)  # type: ignore[no-any-return]


def beeswarm(figure: Figure, envelope: dict[str, Any], rows: list[dict[str, Any]], names: Names) -> None:
    """Every reference row's SHAP value per feature (most important on top), coloured by the value."""
    order = envelope["output"]["feature_order"]
    values = np.asarray([r["attribution_values"] for r in envelope["results"]], dtype=float)
    top = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:MAX_SWARM][::-1]
    ax = figure.add_subplot()
    cmap = matplotlib.colormaps["coolwarm"]
    for y, j in enumerate(top.tolist()):
        x = values[:, j]
        shades = _value_colours([row[order[j]] for row in rows])
        colours = cmap(shades) if shades is not None else "#888888"
        ax.scatter(x, y + _swarm_offsets(x), s=9, c=colours, linewidths=0)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(top)), [short(names.display(order[j])) for j in top.tolist()], fontsize=10)
    target = envelope["output"].get("target") or (envelope["results"][0].get("target") if rows else None)
    ax.set_xlabel(f"SHAP attribution, {space_phrase(envelope['output']['space'], target)}", fontsize=11)
    ax.set_title(
        f"{model_title(envelope)}: SHAP values of {len(rows)} reference rows\n"
        f"({envelope['method']['algorithm']} SHAP, most important features on top)",
        fontsize=12,
    )
    bar = figure.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, ticks=[0, 1], aspect=40)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value (categories grey)", fontsize=10)

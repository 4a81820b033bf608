"""Pictures of text-model explanations: an attention heatmap (token x token) and the text with each word
highlighted by its attribution. Imported only when drawing."""

from __future__ import annotations

import math
from typing import Any

import matplotlib
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from explainers.narratives import attention_matrix, ranked_words, signed
from explainers.plots.tabular import model_title, prediction_label

MAX_TICK_LABELS = 64
FONT_SIZES = (14, 12, 10, 8)
TOP_WORDS = 5


def heatmap(
    figure: Figure,
    result: dict[str, Any],
    envelope: dict[str, Any],
    view: str | None = None,
    layer: int | None = None,
    head: int | None = None,
) -> None:
    """One attention matrix the record holds: rows are the attending (query) tokens, columns the attended."""
    matrix, described = attention_matrix(result, envelope["method"]["params"], view or "auto", layer, head)
    tokens = [t["token"] for t in result["tokens"]]
    count = len(tokens)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="viridis", vmin=0.0, interpolation="nearest")
    size = max(5.0, min(10.0, 400.0 / max(count, 1)))
    step = max(1, math.ceil(count / MAX_TICK_LABELS))
    ticks = list(range(0, count, step))
    ax.set_xticks(ticks, [tokens[i] for i in ticks], rotation=90, fontsize=size)
    ax.set_yticks(ticks, [tokens[i] for i in ticks], fontsize=size)
    ax.set_xlabel("attended token (key)", fontsize=11)
    ax.set_ylabel("attending token (query)", fontsize=11)
    figure.colorbar(image, ax=ax, label="attention weight", shrink=0.85)
    ax.set_title(
        f"{model_title(envelope)}: {prediction_label(result['prediction'])}\n{described}", fontsize=12
    )
    if step > 1:
        figure.text(0.01, 0.01, f"every {step}th token labelled ({count} tokens)", fontsize=9)


def _place(ax: Any, words: list[dict[str, Any]], size: float, norm: Normalize, final: bool) -> int:
    """Lay the words out in lines inside ``ax``; returns how many fit (all of them unless ``final``, when
    as many as fit are kept; otherwise a partial layout is removed)."""
    renderer = ax.figure.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    pixels = size * ax.figure.dpi / 72
    line, gap, pad = pixels * 2.0, pixels * 0.32, pixels * 0.3
    cmap = matplotlib.colormaps["RdBu_r"]
    x, y, previous_end = 0.0, box.height - line, None
    placed: list[Any] = []
    for word in words:
        if previous_end is not None and word["start"] > previous_end:
            x += gap
        previous_end = word["end"]
        value = float(word["attribution"])
        artist = ax.text(
            x / box.width,
            y / box.height,
            word["word"],
            fontsize=size,
            transform=ax.transAxes,
            color="white" if abs(norm(value) - 0.5) > 0.32 else "black",
            bbox={"boxstyle": "square,pad=0.15", "facecolor": cmap(norm(value)), "edgecolor": "none"},
        )
        width = artist.get_window_extent(renderer).width + pad
        if x > 0 and x + width > box.width:
            x, y = 0.0, y - line
            artist.set_position((0.0, y / box.height))
        if y < 0:
            artist.remove()
            if not final:
                for other in placed:
                    other.remove()
            return len(placed)
        placed.append(artist)
        x += width
    return len(placed)


def highlighted_words(figure: Figure, result: dict[str, Any], envelope: dict[str, Any]) -> None:
    """The text word by word, each on a colour for its attribution: red raises the target's probability,
    blue lowers it, stronger colour = larger |attribution| (scaled to the largest in this text)."""
    words = result["words"]
    target = result["target"]
    largest = max((abs(float(w["attribution"])) for w in words), default=0.0) or 1.0
    norm = Normalize(-largest, largest)
    figure.text(
        0.5,
        0.96,
        f"{model_title(envelope)}: {prediction_label(result['prediction'])}\n"
        f"{envelope['method']['algorithm'].replace('_', ' ')} attributions to the probability of '{target}'",
        ha="center",
        va="top",
        fontsize=12,
    )
    ax = figure.add_axes((0.04, 0.3, 0.92, 0.52))
    ax.axis("off")
    shown = 0
    for position, size in enumerate(FONT_SIZES):
        shown = _place(ax, words, size, norm, final=position == len(FONT_SIZES) - 1)
        if shown == len(words):
            break
    top = [f"'{w['word']}' {signed(w['attribution'], 'token_attribution')}" for w in ranked_words(result)]
    note = "largest: " + ", ".join(top[:TOP_WORDS])
    if shown < len(words):
        note += f"; {len(words) - shown} more words not shown"
    figure.text(0.5, 0.22, note, ha="center", fontsize=11)
    cax = figure.add_axes((0.2, 0.1, 0.6, 0.03))
    bar = figure.colorbar(
        ScalarMappable(norm, matplotlib.colormaps["RdBu_r"]), cax=cax, orientation="horizontal"
    )
    bar.set_label(f"attribution (red raises P('{target}'), blue lowers it)", fontsize=10)

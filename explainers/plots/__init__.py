"""Pictures of explanations, drawn on the server with matplotlib's Agg renderer (no pyplot state): SVG with
real text elements (``svg.fonttype: none``: labels stay searchable and selectable) or PNG at ``DPI``.

Each kind of picture has one fixed size (``SIZES``, inches; PNG pixels = inches x ``DPI``, SVG points =
inches x 72), whatever it shows: long texts, many tokens or many features are fitted (smaller fonts, thinned
tick labels, the rest summed or cut with a note), never by growing the canvas. Fonts are DejaVu Sans (shipped
with matplotlib), then Noto Sans CJK and Symbola for other scripts and emoji (``fonts``), 10-13 pt.

matplotlib is imported only when a picture is drawn (the drawing modules are imported lazily), and drawing
is serialised by a lock: matplotlib's font cache and rcParams are process-wide.
"""

from __future__ import annotations

import importlib
import io
import threading
from collections.abc import Callable
from typing import Any, Literal

from model_store.errors import InvalidInput

DPI = 100
FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
SIZES: dict[str, tuple[float, float]] = {
    "waterfall": (9.0, 6.0),
    "counterfactual": (9.0, 5.0),
    "reasons": (9.0, 5.0),
    "attention": (9.0, 8.0),
    "text": (9.0, 5.0),
    "importance": (9.0, 6.0),
    "beeswarm": (9.0, 6.0),
    "correlations": (9.0, 8.0),
}
DRAWERS = {
    "waterfall": "explainers.plots.tabular:waterfall",
    "counterfactual": "explainers.plots.tabular:counterfactual_table",
    "reasons": "explainers.plots.tabular:reasons_bars",
    "importance": "explainers.plots.tabular:importance_bars",
    "beeswarm": "explainers.plots.tabular:beeswarm",
    "correlations": "explainers.plots.tabular:correlation_heatmap",
    "attention": "explainers.plots.text:heatmap",
    "text": "explainers.plots.text:highlighted_words",
}
RECORD_PICTURES = {
    "shap": "waterfall",
    "counterfactuals": "counterfactual",
    "reasons": "reasons",
    "attention": "attention",
    "attributions": "text",
}
"""Record kind (the method's name) -> the picture drawn for it."""
MANUAL_LAYOUT = {"text"}
"""Pictures that place their own axes (the others use matplotlib's constrained layout)."""
RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text elements, not glyph paths
    "svg.hashsalt": "candor",  # the same SVG for the same record
    "text.parse_math": False,  # a "$" in a label or a text is a dollar sign
    "font.family": "DejaVu Sans",
    "font.size": 11,
}
_LOCK = threading.Lock()


def pixel_size(picture: str) -> tuple[int, int]:
    """(width, height) of a PNG of ``picture`` in pixels."""
    width, height = SIZES[picture]
    return round(width * DPI), round(height * DPI)


def render(picture: str, fmt: str, data: dict[str, Any]) -> bytes:
    """Draw ``picture`` from ``data`` (what its drawing function takes) as ``fmt`` bytes."""
    if fmt not in FORMATS:
        raise InvalidInput.field("format", f"One of {', '.join(FORMATS)}.")
    module_name, _, function = DRAWERS[picture].partition(":")
    with _LOCK:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from explainers.plots import fonts

        with matplotlib.rc_context({**RC, "font.family": fonts.families()}):  # type: ignore[arg-type,dict-item]
            draw: Callable[..., None] = getattr(importlib.import_module(module_name), function)
            layout: Literal["constrained"] | None = None if picture in MANUAL_LAYOUT else "constrained"
            figure = Figure(figsize=SIZES[picture], dpi=DPI, layout=layout)
            FigureCanvasAgg(figure)  # text extents are measured with the Agg renderer
            draw(figure, **data)
            _drawable_texts(figure, fonts.drawable)
            buffer = io.BytesIO()
            metadata = {"Date": None} if fmt == "svg" else {"Software": None}
            figure.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def _drawable_texts(figure: Any, drawable: Callable[[str], str]) -> None:
    """Every text of the figure (titles, labels, tick labels, table cells) with the characters no font has
    written as code points (``fonts.drawable``)."""
    from matplotlib.text import Text

    from explainers.plots.fonts import DrawableFormatter

    for text in figure.findobj(Text):
        value = text.get_text()
        shown = drawable(value) if value else value
        if shown != value:
            text.set_text(shown)
    for ax in figure.axes:  # tick labels are made by the formatters when drawn
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(DrawableFormatter(axis.get_major_formatter()))
            axis.set_minor_formatter(DrawableFormatter(axis.get_minor_formatter()))


def record_picture(record: dict[str, Any], instance: int) -> tuple[str, dict[str, Any]]:
    """The picture of one result of a stored record, and that result (422 naming the field otherwise)."""
    picture = RECORD_PICTURES.get(record["kind"])
    if picture is None:
        raise InvalidInput.field("record_id", f"A {record['kind']} record has no picture.")
    return picture, record_result(record, instance)


def record_result(record: dict[str, Any], instance: int) -> dict[str, Any]:
    """Result ``instance`` of a stored record (422 naming ``instance`` past its last)."""
    results = record["explanation"]["results"]
    if instance >= len(results):
        raise InvalidInput.field(
            "instance", f"The record holds {len(results)} result(s): 0 to {len(results) - 1}."
        )
    return results[instance]

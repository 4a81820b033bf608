"""Pictures of explanations, drawn on the server with matplotlib's Agg renderer (no pyplot state): SVG with
real text elements (``svg.fonttype: none``: labels stay searchable and selectable) or PNG at ``DPI``.

Each kind of picture has one fixed size (its ``Drawer``'s, inches; PNG pixels = inches x ``DPI``, SVG points =
inches x 72), whatever it shows: long texts, many tokens or many features are fitted (smaller fonts, thinned
tick labels, the rest summed or cut with a note), never by growing the canvas. Fonts are DejaVu Sans (shipped
with matplotlib), then Noto Sans CJK and Symbola for other scripts and emoji (``fonts``), 10-13 pt.

matplotlib is imported only when a picture is drawn (the drawing modules are imported lazily), and drawing
is serialised by a lock: matplotlib's font cache and rcParams are process-wide.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import threading
from collections.abc import Callable
from typing import Any, Literal

from model_store.errors import InvalidInput

DPI = 100
FORMATS = {"svg": "image/svg+xml", "png": "image/png"}


@dataclasses.dataclass(frozen=True)
class Drawer:
    """A drawing function (``module:function``, called with the figure and the picture's data) and the one
    size of its pictures in inches."""

    target: str
    size: tuple[float, float]
    manual_layout: bool = False
    """Whether it places its own axes (else matplotlib's constrained layout does)."""


DRAWERS: dict[str, Drawer] = {
    "waterfall": Drawer("explainers.plots.tabular:waterfall", (9.0, 6.0)),
    "counterfactual": Drawer("explainers.plots.tabular:counterfactual_table", (9.0, 5.0)),
    "reasons": Drawer("explainers.plots.tabular:reasons_bars", (9.0, 5.0)),
    "attention": Drawer("explainers.plots.text:heatmap", (9.0, 8.0)),
    "text": Drawer("explainers.plots.text:highlighted_words", (9.0, 5.0), manual_layout=True),
    "importance": Drawer("explainers.plots.tabular:importance_bars", (9.0, 6.0)),
    "beeswarm": Drawer("explainers.plots.tabular:beeswarm", (9.0, 6.0)),
    "correlations": Drawer("explainers.plots.tabular:correlation_heatmap", (9.0, 8.0)),
}
SIZES = {name: drawer.size for name, drawer in DRAWERS.items()}
RC: dict[str, Any] = {
    "svg.fonttype": "none",  # text elements, not glyph paths
    "svg.hashsalt": "candor",  # the same SVG for the same record
    "text.parse_math": False,  # a "$" in a label or a text is a dollar sign
    "font.family": "DejaVu Sans",
    "font.size": 11,
}
_LOCK = threading.Lock()


def pixel_size(picture: str | Drawer) -> tuple[int, int]:
    """(width, height) of a PNG of ``picture`` in pixels."""
    width, height = (DRAWERS[picture] if isinstance(picture, str) else picture).size
    return round(width * DPI), round(height * DPI)


def render(picture: str | Drawer, fmt: str, data: dict[str, Any]) -> bytes:
    """Draw ``picture`` (a name of ``DRAWERS`` or a method's own ``Drawer``) from ``data`` (what its drawing
    function takes) as ``fmt`` bytes."""
    if fmt not in FORMATS:
        raise InvalidInput.field("format", f"One of {', '.join(FORMATS)}.")
    drawer = DRAWERS[picture] if isinstance(picture, str) else picture
    module_name, _, function = drawer.target.partition(":")
    with _LOCK:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from explainers.plots import fonts

        with matplotlib.rc_context({**RC, "font.family": fonts.families()}):  # type: ignore[arg-type,dict-item]
            draw: Callable[..., None] = getattr(importlib.import_module(module_name), function)
            layout: Literal["constrained"] | None = None if drawer.manual_layout else "constrained"
            figure = Figure(figsize=drawer.size, dpi=DPI, layout=layout)
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


def record_result(record: dict[str, Any], instance: int) -> dict[str, Any]:
    """Result ``instance`` of a stored record (422 naming ``instance`` past its last)."""
    results = record["explanation"]["results"]
    if instance >= len(results):
        raise InvalidInput.field(
            "instance", f"The record holds {len(results)} result(s): 0 to {len(results) - 1}."
        )
    return results[instance]

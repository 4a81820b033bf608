"""Fonts for pictures in any script: DejaVu Sans (shipped with matplotlib), then Noto Sans CJK (Debian's
``fonts-noto-cjk``) for Chinese, Japanese and Korean, then Symbola (``fonts-symbola``) for emoji and symbols
in monochrome outlines (matplotlib's Agg draws no colour emoji). matplotlib falls back glyph by glyph along
``FAMILIES``; a character none of them has is written as its code point (``U+1F9EC``), never an empty box.

A font installed after matplotlib built its font cache is not in that cache: the families are looked up
among the system's font files once per process and added. Imported only when drawing.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

from matplotlib import font_manager
from matplotlib.ft2font import FT2Font
from matplotlib.ticker import Formatter

FAMILIES = ["DejaVu Sans", "Noto Sans CJK JP", "Symbola"]
"""matplotlib's ``font.family``, in fallback order (a missing one is skipped)."""
KEEP = {"\n", "\t", " "}
INVISIBLE = {"Cf", "Mn", "Me"}
"""Unicode categories dropped when no font has them: joiners and variation selectors (emoji sequences)."""


@functools.cache
def families() -> list[str]:
    """The families of ``FAMILIES`` that are installed, each added to matplotlib's font list if needed."""
    known = {entry.name for entry in font_manager.fontManager.ttflist}
    if not set(FAMILIES) <= known:
        for path in font_manager.findSystemFonts():
            try:
                name = font_manager.get_font(path).family_name
            except (OSError, RuntimeError):
                continue
            if name in FAMILIES and name not in known:
                font_manager.fontManager.addfont(path)
                known.add(name)
    return [family for family in FAMILIES if family in known]


@functools.cache
def covered() -> frozenset[int]:
    """Every code point one of the installed families can draw."""
    points: set[int] = set()
    for family in families():
        path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        points.update(FT2Font(path).get_charmap())
    return frozenset(points)


def drawable(text: str) -> str:
    """``text`` with each character no font has replaced by its code point (invisible ones dropped)."""
    points = covered()
    if all(ord(char) in points or char in KEEP for char in text):
        return text
    out = []
    for char in text:
        if ord(char) in points or char in KEEP:
            out.append(char)
        elif unicodedata.category(char) not in INVISIBLE:
            out.append(f"U+{ord(char):04X}")
    return "".join(out)


class DrawableFormatter(Formatter):
    """A tick formatter whose labels are another's, made ``drawable``."""

    def __init__(self, inner: Formatter) -> None:
        self.inner = inner

    def __call__(self, x: Any, pos: Any = None) -> str:
        return drawable(str(self.inner(x, pos)))

    def format_ticks(self, values: Any) -> list[str]:
        return [drawable(str(label)) for label in self.inner.format_ticks(values)]

    def set_locs(self, locs: Any) -> None:
        self.inner.set_locs(locs)

    def get_offset(self) -> str:
        return drawable(self.inner.get_offset())

"""Feature names in any script reach the pictures: CJK through a font that covers it, emoji through a
monochrome emoji font, and any character no font has as its code point ("U+XXXX"), never an empty box.

matplotlib warns "Glyph ... missing from font(s)" when it draws a box; the project's filterwarnings=error
turns that into a failure here."""

from __future__ import annotations

import io
import warnings
from typing import Any

import pytest

from explainers.narratives import Names
from explainers.plots import render
from model_store.manifest import parse_manifest

FEATURES = ["体重 (kg)", "血压 収縮期", "혈당", "mood 😀", "spark ✨", "tick ✅"]
UNCOVERED = "\U000f0000"  # a private-use plane character: no font has it


def importance(features: list[str]) -> dict[str, Any]:
    manifest = parse_manifest(
        {
            "name": "intl",
            "task": "binary_classification",
            "classes": ["no", "yes"],
            "favourable_class": "yes",
            "features": [
                {"name": f"f{i}", "type": "numeric", "display_name": f} for i, f in enumerate(features)
            ],
        }
    )
    return {
        "importance": {
            "model": {"name": "intl", "version": 1},
            "features": [{"feature": f"f{i}", "importance": 1.0 / (i + 1)} for i in range(len(features))],
            "output": {"space": "probability"},
            "method": {"params": {"rows": 10}, "algorithm": "tree"},
        },
        "names": Names(manifest),
        "target": "yes",
    }


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_cjk_and_emoji_feature_names_draw_without_missing_glyphs(fmt: str, tmp_path: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font(s)" is a UserWarning
        body = render("importance", fmt, importance(FEATURES))
    (tmp_path / f"intl.{fmt}").write_bytes(body)
    if fmt == "svg":
        text = body.decode()
        for name in FEATURES:
            assert name in text, name  # text elements keep the names themselves


def test_a_character_no_font_has_is_shown_as_its_code_point() -> None:
    from explainers.plots.fonts import drawable

    assert drawable(f"x{UNCOVERED}y") == "xU+F0000y"
    assert drawable("体重 😀 ✅ é") == "体重 😀 ✅ é"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        body = render("importance", "png", importance([f"odd {UNCOVERED}", *FEATURES]))
    from PIL import Image

    assert Image.open(io.BytesIO(body)).size == (900, 600)

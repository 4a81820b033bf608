"""bertviz's attention views (Vig 2019) as one self-contained HTML page: no CDN, no request at all.

bertviz's own HTML loads require.js, d3 5.7.0 and jQuery from a CDN. This page inlines the same libraries
from installed Python packages instead (nothing is copied into this repository): bertviz's ``head_view.js``
and ``model_view.js`` (Apache-2.0) from ``bertviz``, d3 5.7.0 (ISC) from ``mpld3``, which ships exactly that
build, and jQuery 3.7.1 (MIT) from ``XStatic-jQuery``, each with its license header. bertviz's views only call
``require.config`` and ``requirejs([...], callback)``: a four-line shim hands them the two inlined libraries,
so require.js itself is not needed. The view's data is a ``<script type="application/json">`` block, read
with ``JSON.parse``; every executable script is allowed by its sha256 in the page's Content-Security-Policy.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_store import array_codec
from model_store.errors import CandorError, InvalidInput

VIEWS = ("head", "model")
ROOT_DIV = "bertviz"
SHIM = """// bertviz's views ask require.js for jquery and d3; both are inlined above.
window.require = { config: function () {} };
window.requirejs = function (names, callback) {
  callback.apply(null, names.map(function (name) { return name === "d3" ? window.d3 : window.jQuery; }));
};"""
PARAMS = 'JSON.parse(document.getElementById("bertviz-params").textContent)'


class ViewerMissing(CandorError):
    """A package whose files the page inlines is not installed."""

    status = 503
    title = "Viewer not installed"
    type_slug = "viewer-not-installed"


def params(attn: Any, tokens: list[str], layers: list[int], heads: list[int]) -> dict[str, Any]:
    """What bertviz's head and model views read (their ``PYTHON_PARAMS``): ``attn`` is layers x heads x T x T
    in the order of ``layers`` and ``heads`` (the model's indices, shown as labels)."""
    return {
        "attention": [{"name": None, "attn": attn, "left_text": tokens, "right_text": tokens}],
        "default_filter": "0",
        "root_div_id": ROOT_DIV,
        "layer": None,  # head view: the first of include_layers
        "heads": None,  # head view: every head of attn shown at first
        "include_layers": list(layers),
        "include_heads": list(heads),
        "total_heads": len(heads),
        "display_mode": "light",
    }


def from_result(result: dict[str, Any], method_params: dict[str, Any]) -> dict[str, Any]:
    """The view's parameters from one recorded attention result (weights decoded to arrays): its bertviz
    object, or its per-head matrices; aggregated weights alone cannot be shown (422)."""
    tokens = [token["token"] for token in result["tokens"]]
    layers, heads = method_params["layers"], method_params["heads"]
    if "bertviz" in result:
        attn = np.ascontiguousarray(array_codec.decode(result["bertviz"]["attention"][0]["attn"], np.float32))
        return params(attn, tokens, layers, heads)
    maps = {(entry["layer"], entry["head"]): entry["weights"] for entry in result.get("attention", [])}
    if not maps or not all(isinstance(head, int) for _, head in maps):
        raise InvalidInput.field(
            "record_id",
            "bertviz shows individual heads: record the attention with aggregate none (or format bertviz).",
        )
    attn = np.stack([np.stack([array_codec.decode(maps[layer, head]) for head in heads]) for layer in layers])
    return params(attn.astype(np.float32), tokens, layers, heads)


def _package_dir(module: str) -> Path:
    """Where an installed package's files are, without importing it (bertviz imports torch and IPython)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ViewerMissing(
            f"The bertviz view needs the Python package providing {module!r}; install Candor's dependencies "
            "(bertviz is installed with --no-deps, see the README)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _libraries() -> tuple[str, str]:
    """jQuery and d3 5.7.0, each with its own license header."""
    jquery = (_package_dir("xstatic.pkg.jquery") / "data" / "jquery.min.js").read_text(encoding="utf-8")
    d3 = (_package_dir("mpld3") / "js" / "d3.v5.min.js").read_text(encoding="utf-8")
    return jquery, d3


@functools.cache
def _view_script(view: str) -> str:
    """bertviz's script for ``view``, reading its parameters from the page's JSON block."""
    source = (_package_dir("bertviz") / f"{view}_view.js").read_text(encoding="utf-8")
    header = f"/* bertviz {importlib.metadata.version('bertviz')} by Jesse Vig, Apache License 2.0 */\n"
    return header + source.replace("PYTHON_PARAMS", PARAMS, 1)


def script_hash(script: str) -> str:
    """A CSP source allowing exactly this inline script."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode() + "'"


def page(view_params: dict[str, Any], view: str, title: str) -> tuple[str, list[str]]:
    """The HTML page of bertviz's ``view`` (``head`` or ``model``) over ``view_params``, and the CSP sources
    of its scripts."""
    if view not in VIEWS:
        raise InvalidInput.field("view", f"One of {', '.join(VIEWS)}.")
    jquery, d3 = _libraries()
    scripts = [jquery, d3, SHIM, _view_script(view)]
    data = orjson.dumps(view_params, option=orjson.OPT_SERIALIZE_NUMPY).decode().replace("<", "\\u003c")
    layer_select = 'Layer: <select id="layer"></select>' if view == "head" else ""
    body = "\n".join(f"<script>{script}</script>" for script in scripts)
    text = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
</head>
<body>
<h1 style="font: 600 16px sans-serif">{html.escape(title)}</h1>
<div id="{ROOT_DIV}" style="font-family:'Helvetica Neue', Helvetica, Arial, sans-serif;">
<span style="user-select:none">{layer_select}</span>
<div id="vis"></div>
</div>
<script type="application/json" id="bertviz-params">{data}</script>
{body}
</body>
</html>
"""
    return text, [script_hash(script) for script in scripts]

"""Strict, fast JSON bytes: orjson with numpy scalars, sets and tuples (NaN and Infinity are not JSON).
No Flask here: the service, replay and the Dask job task serialise with it; ``api.http.jsonio`` serves it
over HTTP."""

from __future__ import annotations

from typing import Any

import orjson

from model_store.audit import json_default

OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def dumps_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=json_default, option=OPTIONS)
    except TypeError:
        # A lone surrogate (valid in Python strings, not in UTF-8) echoed from client input, e.g. a field
        # name in a problem document: shown as U+FFFD rather than failing the response.
        return orjson.dumps(_without_surrogates(value), default=json_default, option=OPTIONS)


def _without_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_without_surrogates(k): _without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_surrogates(v) for v in value]
    return value

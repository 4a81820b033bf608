"""An endpoint's settings, read from the environment only (never stored in the database or records):

``CANDOR_PREDICTOR_<ENDPOINT>_URL`` the server's base URL (``http://host:port``), ``..._TIMEOUT`` seconds
per request (default 10), ``..._AUTHORIZATION`` the ``Authorization`` header's value, ``..._RETRIES``
retries after a connection error or a 5xx answer (default 2), ``..._MAX_BATCH`` the most rows per request
(default 100000).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from model_store.errors import Unavailable

PREFIX = "CANDOR_PREDICTOR_"
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 2
DEFAULT_MAX_BATCH = 100_000


@dataclasses.dataclass(frozen=True)
class PredictorEndpoint:
    name: str
    url: str = dataclasses.field(repr=False)
    timeout: float = DEFAULT_TIMEOUT
    authorization: str | None = dataclasses.field(default=None, repr=False)
    retries: int = DEFAULT_RETRIES
    max_batch: int = DEFAULT_MAX_BATCH

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> PredictorEndpoint:
        """The endpoint ``name``'s settings; ``Unavailable`` (503) naming the variable when one is missing
        or malformed (its value is never shown)."""
        env = os.environ if environ is None else environ
        key = f"{PREFIX}{name}_URL"
        url = env.get(key, "").strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unavailable(f"The predictor endpoint {name} has no http(s) URL in {key}.")
        return cls(
            name=name,
            url=url,
            timeout=_number(env, f"{PREFIX}{name}_TIMEOUT", DEFAULT_TIMEOUT, float, 0.001),
            authorization=env.get(f"{PREFIX}{name}_AUTHORIZATION") or None,
            retries=_number(env, f"{PREFIX}{name}_RETRIES", DEFAULT_RETRIES, int, 0),
            max_batch=_number(env, f"{PREFIX}{name}_MAX_BATCH", DEFAULT_MAX_BATCH, int, 1),
        )


def _number(env: Mapping[str, str], key: str, default: Any, kind: type, low: float) -> Any:
    text = env.get(key)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text.strip())
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low:
        raise Unavailable(f"{key} must be a number of at least {low}.")
    return value

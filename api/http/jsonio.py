"""Strict, fast JSON for every HTTP body in and out: Flask's JSON provider and responses over orjson
(``api.service.jsonbytes``; NaN and Infinity are not JSON and are refused)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider

from api.service.jsonbytes import dumps_bytes

__all__ = ["OrjsonProvider", "dumps_bytes", "json_response"]


def json_response(
    value: Any, status: int = 200, mimetype: str = "application/json", headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps_bytes(value), status=status, mimetype=mimetype, headers=headers)


class OrjsonProvider(JSONProvider):
    """Flask's JSON provider backed by orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps_bytes(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        value = args[0] if len(args) == 1 else (args or kwargs)
        return json_response(value)

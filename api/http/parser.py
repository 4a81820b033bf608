"""webargs parser that reads JSON with orjson, so NaN and Infinity are rejected like any malformed JSON, and
refuses NUL characters in strings."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge

from model_store.errors import InvalidInput

NUL_MESSAGE = "NUL characters are not accepted."


class StrictJsonParser(FlaskParser):
    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        data = req.get_data(cache=True)
        limit = req.max_content_length
        if req.content_length is None and limit is not None and len(data) >= limit and _more_follows(req):
            raise RequestEntityTooLarge()  # werkzeug cut a chunked body at the limit
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._handle_invalid_json_error(exc, req)  # type: ignore[arg-type]
        if b"\\u0000" in data:
            refuse_nul(value)
        return value


def refuse_nul(value: Any, path: str = "") -> None:
    """Refuse NUL characters in any string or key (PostgreSQL cannot store them, and no field needs them)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput.field(path or "body", NUL_MESSAGE)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                raise InvalidInput.field(where.replace("\x00", ""), NUL_MESSAGE)
            refuse_nul(item, where)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            refuse_nul(item, f"{path}.{index}" if path else str(index))


def _more_follows(req: Request) -> bool:
    """Whether the raw input still holds bytes past what werkzeug read (a body over the limit)."""
    return bool(req.environ["wsgi.input"].read(1))

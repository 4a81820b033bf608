"""webargs parser that reads JSON with orjson, so NaN and Infinity are rejected like any malformed JSON."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import RequestEntityTooLarge


class StrictJsonParser(FlaskParser):
    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        data = req.get_data(cache=True)
        limit = req.max_content_length
        if req.content_length is None and limit is not None and len(data) >= limit and _more_follows(req):
            raise RequestEntityTooLarge()  # werkzeug cut a chunked body at the limit
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._handle_invalid_json_error(exc, req)  # type: ignore[arg-type]


def _more_follows(req: Request) -> bool:
    """Whether the raw input still holds bytes past what werkzeug read (a body over the limit)."""
    return bool(req.environ["wsgi.input"].read(1))

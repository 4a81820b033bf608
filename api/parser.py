"""webargs parser that reads JSON with orjson, so NaN and Infinity are rejected like any malformed JSON."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request


class StrictJsonParser(FlaskParser):
    def _raw_load_json(self, req: Request) -> Any:
        if not is_json_request(req):
            return core.missing
        try:
            return orjson.loads(req.get_data(cache=True))
        except orjson.JSONDecodeError as exc:
            self._handle_invalid_json_error(exc, req)  # type: ignore[arg-type]

"""RFC 9457 problem documents for every error, with a field-level ``errors`` map."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from api.http.jsonio import json_response
from api.http.observability import request_id
from model_store.errors import CandorError
from model_store.manifest import flatten_messages

PROBLEM_TYPE_BASE = "https://candor.dev/problems/"
PROBLEM_MIMETYPE = "application/problem+json"
UNEXPECTED = "An unexpected error occurred; it has been logged."
KSERVE_V1_VERBS = (":predict", ":explain")
"""KServe V1's verbs under ``/v1/models/``; every path under ``/v2`` (Open Inference Protocol) counts too.
``GET /v1/models/{name}`` (also KServe V1's model-ready call) stays Candor's resource: problem+json."""
MAX_ERROR_FIELDS = 3
log = logging.getLogger("candor.errors")


def problem(
    status: int,
    title: str,
    detail: str | None = None,
    errors: dict[str, Any] | None = None,
    type_slug: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = problem_document(status, title, detail, errors, type_slug)
    mimetype = PROBLEM_MIMETYPE
    if speaks_kserve():
        body["error"] = error_message(detail or title, errors)
        mimetype = PROBLEM_MIMETYPE if _asks_for_problem_json() else "application/json"
    return json_response(body, status=status, mimetype=mimetype, headers=headers)


def problem_document(
    status: int,
    title: str,
    detail: str | None = None,
    errors: dict[str, Any] | None = None,
    type_slug: str | None = None,
) -> dict[str, Any]:
    """The RFC 9457 document (``problem`` sends it; a failed stream ends with it)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + (type_slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
        "instance": request.path,
        "request_id": request_id(),
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    return body


def problem_of(error: Exception) -> dict[str, Any]:
    """The document an exception is answered with: a domain error's own, else a bare 500."""
    if isinstance(error, CandorError):
        return problem_document(error.status, error.title, error.detail, error.errors, error.type_slug)
    return problem_document(500, "Internal Server Error", UNEXPECTED)


def speaks_kserve() -> bool:
    """KServe clients (V1 verbs, Open Inference Protocol V2) read the message from an ``error`` member of
    an ``application/json`` body: their routes add it to the problem document."""
    return is_kserve_path(request.path)  # by path: a 405 on a verb's path too


def is_kserve_path(path: str) -> bool:
    """A KServe V1 verb's path or one under ``/v2`` (route templates as well as request paths)."""
    verb = path.startswith("/v1/models/") and path.endswith(KSERVE_V1_VERBS)
    return verb or path == "/v2" or path.startswith("/v2/")


def _asks_for_problem_json() -> bool:
    return any(m == PROBLEM_MIMETYPE and q > 0 for m, q in request.accept_mimetypes)


def error_message(text: str, errors: dict[str, Any] | None) -> str:
    """One line for clients that show only ``error``: the detail, then the first fields' messages."""
    if not errors:
        return text
    parts = []
    for field, messages in list(errors.items())[:MAX_ERROR_FIELDS]:
        message = messages[0] if isinstance(messages, list) and messages else messages
        parts.append(f"{field}: {message}")
    more = len(errors) - MAX_ERROR_FIELDS
    listed = "; ".join(part for part in parts if part not in text)  # a one-field detail names it already
    return " ".join(filter(None, [text, listed])) + (f" (and {more} more)" if more > 0 else "")


def http_problem(error: HTTPException) -> Response:
    """Werkzeug and webargs errors; validation messages become ``{"field.path": [...]}``."""
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    errors = None
    detail = error.description if status != 422 else "The request does not match the schema."
    if messages:
        # webargs nests messages under the location ("json", "form", "files", "query"); drop that level.
        flat: dict[str, Any] = {}
        for location_messages in messages.values():
            flat.update(flatten_messages(location_messages))
        errors = flat
    if status == 400 and messages:
        detail = "The request body is not valid JSON (NaN and Infinity are not JSON numbers)."
    headers = {k: v for k, v in error.get_headers() if k.lower() in ("allow", "retry-after")}
    return problem(status, error.name, detail, errors, headers=headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CandorError)
    def _domain(error: CandorError) -> Response:
        if error.status >= 500:
            log.error(
                "%s on %s: %s", type(error).__name__, request.path, error.detail, exc_info=error.__cause__
            )
        return problem(error.status, error.title, error.detail, error.errors, error.type_slug)

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        return http_problem(error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("Unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", UNEXPECTED)

"""gunicorn's gthread worker, answering what gunicorn refuses before the app as RFC 9457 problem documents.

gunicorn parses the request line and headers itself and refuses some requests before the app sees them (a
request line over ``limit_request_line``, too many or too long headers, a malformed request line, header or
chunked body), with an HTML page. This worker sends the same status as ``application/problem+json``, with an
``X-Request-ID`` that its JSON log line (logger ``candor.http``) names too. Anything else (a failure of the
server itself) is left to gunicorn.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from gunicorn import util
from gunicorn.http import errors as http
from gunicorn.workers.gthread import ThreadWorker

from api.http.errors import PROBLEM_MIMETYPE, PROBLEM_TYPE_BASE

GUNICORN_MAX_REQUEST_LINE = 8190
"""gunicorn's own ceiling for ``limit_request_line`` (0, unlimited, is not offered: it would let one request
line grow without bound)."""
log = logging.getLogger("candor.http")

MALFORMED = (400, "Bad Request", "bad-request")
REFUSALS: dict[type[BaseException], tuple[int, str, str]] = {
    http.LimitRequestLine: (414, "URI Too Long", "uri-too-long"),
    http.LimitRequestHeaders: (431, "Request Header Fields Too Large", "request-header-fields-too-large"),
    http.ExpectationFailed: (417, "Expectation Failed", "expectation-failed"),
    http.UnsupportedTransferCoding: (501, "Not Implemented", "not-implemented"),
    http.InvalidRequestLine: MALFORMED,
    http.InvalidRequestMethod: MALFORMED,
    http.InvalidHTTPVersion: MALFORMED,
    http.InvalidHeader: MALFORMED,
    http.InvalidHeaderName: MALFORMED,
    http.ObsoleteFolding: MALFORMED,
    http.InvalidChunkSize: MALFORMED,
    http.ChunkMissingTerminator: MALFORMED,
    http.InvalidChunkExtension: MALFORMED,
}
"""Client errors gunicorn finds while parsing, by exact type (its response-header errors, subclasses of the
header errors, are the app's fault and stay gunicorn's 500)."""
DETAILS = {
    414: "The request line (method, path and query) is longer than this server accepts "
    "(CANDOR_MAX_REQUEST_LINE bytes); send long inputs in a request body.",
    431: "The request headers are too many or too long.",
    417: "The Expect header asks for something this server does not do.",
    501: "The request's transfer coding is not supported.",
    400: "The request is not well-formed HTTP/1.1.",
}


def request_line_limit(limit: int) -> int:
    """``CANDOR_MAX_REQUEST_LINE`` as gunicorn's ``limit_request_line``, checked: 1 to 8190 bytes."""
    if not 1 <= limit <= GUNICORN_MAX_REQUEST_LINE:
        raise RuntimeError(
            f"CANDOR_MAX_REQUEST_LINE must be 1-{GUNICORN_MAX_REQUEST_LINE} bytes, not {limit}"
        )
    return limit


def problem_response(status: int, title: str, slug: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 response carrying the problem document; the connection is closed after it."""
    body = json.dumps(
        {
            "type": PROBLEM_TYPE_BASE + slug,
            "title": title,
            "status": status,
            "detail": DETAILS[status],
            "request_id": request_id,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\nConnection: close\r\nContent-Type: {PROBLEM_MIMETYPE}\r\n"
        f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class ProblemWorker(ThreadWorker):
    """``gthread``, with gunicorn's refusals answered as problem documents."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        refusal = REFUSALS.get(type(exc))
        if refusal is None:
            super().handle_error(req, client, addr, exc)
            return
        status, title, slug = refusal
        request_id = uuid.uuid4().hex
        peer = addr[0] if addr else ""
        log.warning(
            "Refused before the app: %s %s",
            status,
            title,
            extra={"request_id": request_id, "status": status, "client": peer, "reason": type(exc).__name__},
        )
        try:
            util.write_nonblock(client, problem_response(status, title, slug, request_id))
        except OSError:
            log.debug("Could not send the %s problem document.", status)

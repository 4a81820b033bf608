"""Request ids and structured logs.

Every request has an id: the caller's ``X-Request-ID`` when it is 1-128 characters of ``[A-Za-z0-9._:-]``,
else a new uuid4 hex. It is echoed in the ``X-Request-ID`` response header (errors included), named in every
problem document and in every log line written while the request is handled.

Logs are one JSON object per line on stderr: ``time``, ``level``, ``logger``, ``message``, ``request_id``,
the record's ``extra`` fields and, for errors, ``exception`` (the traceback stays in the log, never in a
response).
Each request writes one access line (logger ``candor.access``) with the method, the route template (never the
raw path), the status, the duration and the calling key's public id; headers and bodies are never logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import time
import uuid
from typing import IO, Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
access_log = logging.getLogger("candor.access")


def request_id() -> str | None:
    """The current request's id (accepted or generated on first use); None outside a request."""
    if not has_request_context():
        return None
    current: str | None = g.get("request_id")
    if current is None:
        sent = request.headers.get(REQUEST_ID_HEADER, "")
        current = sent if _VALID_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        g.request_id = current
    return current


def route_label() -> str:
    """The matched URL rule's template (bounded cardinality), ``unmatched`` when no route matched."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def method_label() -> str:
    return request.method if request.method in KNOWN_METHODS else "other"


def elapsed_seconds() -> float:
    """Seconds since the request started (as seen by the first ``before_request`` hook)."""
    started: float | None = g.get("request_started")
    return time.perf_counter() - started if started is not None else 0.0


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``extra={...}`` fields become members."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class JsonLogHandler(logging.Handler):
    """Writes JSON lines to ``stream``, or to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_logging(level: str) -> None:
    """JSON lines on the root logger (one handler, however many apps are built in this process)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, JsonLogHandler)]:
        root.removeHandler(handler)
    root.addHandler(JsonLogHandler())
    root.setLevel(level.upper())


def init_app(app: Flask, log_level: str) -> None:
    """Call first in ``create_app``: its ``before_request`` must run before any hook that may answer early."""
    configure_logging(log_level)

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        request_id()

    @app.after_request
    def _finish(response: Response) -> Response:
        rid = request_id()
        if rid is not None:
            response.headers[REQUEST_ID_HEADER] = rid
        principal = g.get("principal")  # set by api.http.auth on authenticated routes
        method, route, status = method_label(), route_label(), response.status_code
        access_log.info(
            "%s %s %s",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(elapsed_seconds() * 1000, 3),
                "key_id": principal.key_id if principal is not None else None,
            },
        )
        return response

"""Streamed responses that fail visibly.

The first chunk is computed before the response starts, so an error there (a query the database refuses, a
record that cannot be read) is answered like any other: a problem document with its status. Once bytes have
left, the status cannot change: an error is logged (JSON, logger ``candor.stream``, with its traceback) and
the stream ends with a last line saying so, in the stream's own format. Never an HTML page, never a cut
connection that a client could take for the end of the data.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

from flask import request

from api.http.errors import problem_of
from api.http.jsonio import dumps_bytes

log = logging.getLogger("candor.stream")
CSV_ERROR_MARKER = "#error"

Trailer = Callable[[dict[str, Any]], bytes]


def jsonl_trailer(problem: dict[str, Any]) -> bytes:
    """JSON Lines: ``{"error": <problem document>}``."""
    return dumps_bytes({"error": problem}) + b"\n"


def csv_trailer(problem: dict[str, Any]) -> bytes:
    """CSV: a row ``#error,<problem document as JSON>``."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([CSV_ERROR_MARKER, dumps_bytes(problem).decode()])
    return buffer.getvalue().encode()


def guarded(chunks: Iterator[bytes], trailer: Trailer) -> Iterator[bytes]:
    """``chunks`` with its first chunk computed now (an error raises here, before the response starts); an
    error in a later chunk is logged and ends the stream with ``trailer(problem)`` on a line of its own."""
    first = next((chunk for chunk in chunks if chunk), None)
    return _rest(first, chunks, trailer) if first is not None else iter(())


def _rest(first: bytes, chunks: Iterator[bytes], trailer: Trailer) -> Iterator[bytes]:
    last = first
    yield first
    try:
        for chunk in chunks:
            if chunk:
                last = chunk
                yield chunk
    except Exception as error:
        log.error("The streamed response of %s %s failed", request.method, request.path, exc_info=error)
        yield (b"" if last.endswith(b"\n") else b"\n") + trailer(problem_of(error))

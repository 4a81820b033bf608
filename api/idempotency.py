"""The ``Idempotency-Key`` request header (IETF httpapi draft) of the routes whose retry would repeat work and
records (``POST /v1/jobs``, the explain routes), and the ``Idempotent-Replayed`` answer header."""

from __future__ import annotations

from typing import Any, Protocol

from model_store.errors import InvalidInput

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY = 255


class Headers(Protocol):
    """A request's headers (werkzeug's, in a view)."""

    def get(self, key: str, /) -> str | None: ...


def idempotency_key(headers: Headers) -> str | None:
    """The ``Idempotency-Key`` of a request's ``headers``, 1-255 visible ASCII characters compared as sent (a
    quoted value, the IETF draft's structured-field form, keeps its quotes); None when absent."""
    value = headers.get(IDEMPOTENCY_HEADER)
    if value is None or (1 <= len(value) <= MAX_IDEMPOTENCY_KEY and all(" " < c <= "~" for c in value)):
        return value
    raise InvalidInput.field(
        IDEMPOTENCY_HEADER, f"1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters, e.g. a UUID."
    )


def header_parameter(description: str) -> dict[str, Any]:
    """The header as an OpenAPI parameter."""
    return {
        "in": "header",
        "name": IDEMPOTENCY_HEADER,
        "required": False,
        "description": description,
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY, "pattern": "^[!-~]+$"},
    }


def replayed_header(what: str) -> dict[str, Any]:
    """The answer's ``Idempotent-Replayed`` header as an OpenAPI response header."""
    return {
        REPLAYED_HEADER: {
            "description": f"`true` when the answer is {what} earlier under the same Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    }

"""The ``Idempotency-Key`` request header (IETF httpapi draft) of the routes whose retry would repeat work and
records (``POST /v1/jobs``, the explain routes), the ``Idempotent-Replayed`` answer header, and the one flow
both follow (``once``): find what the key named; else run the request, which claims the key in the
transaction that commits its answer; after losing a race for the key, answer as the winner did. The same key
with another request is a 422 naming the header; an answer that vanished between two steps (a purged record)
is looked for once more, then a 409."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from model_store.audit import canonical_json, sha256_hex
from model_store.errors import Conflict, IdempotencyKeyTaken, InvalidInput

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


Earlier = TypeVar("Earlier")
Answer = TypeVar("Answer")


def fingerprint(fields: dict[str, Any]) -> str:
    """The sha256 of a request's ``fields`` as JSON values (key order and spacing do not count); a 422
    naming the field that JSON's canonical form cannot write (nested too deeply, an integer past 64 bits)."""
    try:
        return sha256_hex(canonical_json(fields))
    except TypeError as exc:
        bad = next((name for name, value in fields.items() if not _writable(value)), "instances")
        raise InvalidInput.field(bad, "Nested too deeply, or a number out of range.") from exc


def _writable(value: Any) -> bool:
    try:
        canonical_json(value)
    except TypeError:
        return False
    return True


def once(
    request_sha256: str,
    find: Callable[[], Earlier | None],
    sha256_of: Callable[[Earlier], str],
    answer_of: Callable[[Earlier], Answer | None],
    run: Callable[[], Answer],
    what: str,
) -> tuple[Answer, bool]:
    """The answer, and whether it is the one given earlier under the same key. ``find`` looks the key up,
    ``sha256_of`` is the fingerprint an earlier request was sent with, ``answer_of`` its answer (None when
    gone), ``run`` computes and claims (raising ``IdempotencyKeyTaken`` when another request claimed the key
    first); ``what`` names the thing in the 422 ("explanation", "job")."""
    for _ in range(2):  # twice: what a key named may be purged (the key with it) between two steps
        earlier = find()
        if earlier is None:
            try:
                return run(), False
            except IdempotencyKeyTaken:
                earlier = find()
                if earlier is None:
                    continue
        if sha256_of(earlier) != request_sha256:
            raise InvalidInput.field(
                IDEMPOTENCY_HEADER,
                f"Already used by this key for a different request: use a new key for a new {what}.",
            )
        answer = answer_of(earlier)
        if answer is not None:
            return answer, True
    raise Conflict(f"The {what} this Idempotency-Key named was purged while it was read; send it again.")

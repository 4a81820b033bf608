"""Domain errors shared by the store, the explainers and the API.

Every error carries the HTTP status it maps to, a short title and an optional field-level ``errors`` map, so
one handler in ``api.http.errors`` can turn any of them into an RFC 9457 problem document. No library text,
path or stack trace is ever put into these messages.

    CandorError
    ├── InvalidInput (422)
    │   ├── InvalidManifest (422)
    │   └── UnsafeArtifact (422)
    ├── Forbidden (403: the key may not do this, e.g. grant more than it has)
    ├── NotFound (404)
    │   ├── ModelNotFound (404)
    │   └── VersionNotFound (404)
    ├── Conflict (409)
    ├── IntegrityError (500: a stored artifact no longer matches its sha256)
    ├── PredictorFailed (502: a remote model's predictor failed or answered wrongly)
    │   └── PredictorTimeout (504)
    └── ExplainerFailed (500 by default; adapters translate library errors into this)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CandorError",
    "Conflict",
    "ExplainerFailed",
    "Forbidden",
    "IntegrityError",
    "InvalidInput",
    "InvalidManifest",
    "ModelNotFound",
    "NotFound",
    "PredictorFailed",
    "PredictorTimeout",
    "UnsafeArtifact",
    "VersionNotFound",
]


class CandorError(Exception):
    """Base of every error the service raises on purpose."""

    status = 500
    title = "Internal error"
    type_slug = "internal-error"

    def __init__(self, detail: str, errors: dict[str, Any] | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}
        if status is not None:
            self.status = status


class InvalidInput(CandorError):
    status = 422
    title = "Invalid input"
    type_slug = "invalid-input"

    @classmethod
    def field(cls, name: str, message: str) -> InvalidInput:
        """An error about one named field."""
        return cls(f"{name}: {message}", {name: [message]})


class InvalidManifest(InvalidInput):
    title = "Invalid manifest"
    type_slug = "invalid-manifest"


class UnsafeArtifact(InvalidInput):
    title = "Artifact refused"
    type_slug = "unsafe-artifact"


class Forbidden(CandorError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class NotFound(CandorError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"Model '{name}' is not registered.")


class VersionNotFound(NotFound):
    def __init__(self, name: str, version: str) -> None:
        super().__init__(f"Model '{name}' has no version '{version}'.")


class Conflict(CandorError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class IdempotencyKeyTaken(Conflict):
    """Another request of the same API key claimed this ``Idempotency-Key`` first (an explanation's record or
    a job); the idempotency flow answers as that request did."""

    def __init__(self, key: str) -> None:
        super().__init__("Another request with this Idempotency-Key was answered first; send it again.")
        self.key = key


class IntegrityError(CandorError):
    status = 500
    title = "Stored artifact failed its integrity check"
    type_slug = "artifact-integrity"


class PredictorFailed(CandorError):
    """A remote model's predictor could not be reached, failed, or answered something unusable; the detail
    names the endpoint, never its URL or credentials."""

    status = 502
    title = "Predictor failed"
    type_slug = "predictor-failed"


class PredictorTimeout(PredictorFailed):
    status = 504
    title = "Predictor timed out"
    type_slug = "predictor-timeout"


class ExplainerFailed(CandorError):
    status = 500
    title = "Explanation failed"
    type_slug = "explainer-failed"


class Unavailable(CandorError):
    """Something this server is not set up to do (for example signing checkpoints without a key)."""

    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"

"""The one place access is checked: every route needs a key with its scope unless it is marked public."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, request

from api.http.errors import problem
from api.http.rate_limit import KeyRateLimiter
from model_store.keys import KeyStore, Principal

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_SCOPE = "admin"
"""A route that declares no scope is reachable by admin keys only: new routes are closed by default."""


def public(view: F) -> F:
    view.candor_public = True  # type: ignore[attr-defined]
    return view


def required_scope(view: Any) -> str | None:
    """The scope a view needs, or None for public views (class attributes of MethodViews count)."""
    target = getattr(view, "view_class", view)
    if getattr(target, "candor_public", False) or getattr(view, "candor_public", False):
        return None
    return getattr(target, "required_scope", DEFAULT_SCOPE)


def current_principal() -> Principal | None:
    return g.get("principal")


def caller_models() -> frozenset[str] | None:
    """The calling key's model allowlist (None: every model, or a public route)."""
    principal = current_principal()
    return principal.models if principal else None


def caller_key_id() -> str | None:
    """The calling key's public id (recorded with every explanation), None on public routes."""
    principal = current_principal()
    return principal.key_id if principal else None


def init_app(app: Flask, keys: KeyStore, limiter: KeyRateLimiter) -> None:
    @app.before_request
    def _authenticate() -> Any:
        if request.endpoint is None:
            return None  # no route matched: the 404/405 handler answers
        scope = required_scope(current_app.view_functions[request.endpoint])
        if scope is None:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        principal = keys.authenticate(token.strip()) if scheme.lower() == "bearer" and token else None
        if principal is None:
            return problem(
                401,
                "Unauthorized",
                "A valid API key is required: 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": 'Bearer realm="candor"'},
            )
        retry_after = limiter.retry_after(principal.key_id)
        if retry_after is not None:
            detail = "This key has made too many requests; retry later."
            return problem(429, "Too Many Requests", detail, headers={"Retry-After": str(retry_after)})
        if not principal.has(scope):
            return problem(403, "Forbidden", f"This key lacks the '{scope}' scope.")
        model = (request.view_args or {}).get("name")
        if model is not None and not principal.sees(model):
            return problem(404, "Not found", f"Model '{model}' is not registered.", type_slug="not-found")
        g.principal = principal
        return None

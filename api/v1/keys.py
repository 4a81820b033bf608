"""API key administration (``admin``): list, create, revoke and rotate keys. Secrets are shown once.

A key administers only keys within its own reach (``Principal.reaches``): an admin key limited to some models
lists, reads, rotates and revokes only keys limited to those models (others are a 404, as if they did not
exist), and may create only such keys (anything more is a 403)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.auth import caller_key_id, current_principal
from api.context import candor
from api.jsonio import json_response
from api.schemas.common import ProblemSchema
from api.schemas.keys import KeyCreateSchema, KeyListSchema, KeySchema, NewKeySchema
from api.v1.blueprint import Blueprint
from model_store.errors import Conflict, Forbidden, NotFound

blp = Blueprint("keys", __name__, url_prefix="/v1/keys", description="API key administration")


def _not_the_callers_own(key_id: str) -> None:
    """An admin key cannot revoke or rotate itself here, so a client cannot lock itself out by mistake."""
    if key_id == caller_key_id():
        raise Conflict("A key cannot revoke or rotate itself; use another admin key or the CLI.")


def _in_reach(described: dict[str, Any]) -> bool:
    principal = current_principal()
    return principal is None or principal.reaches(described["scopes"], described["models"])


def _described(key_id: str) -> dict[str, Any]:
    """The key, or 404 when it does not exist or lies beyond the caller's reach."""
    described = candor().store.keys.describe(key_id)
    if described is None or not _in_reach(described):
        raise NotFound(f"No key '{key_id}'.")
    return described


def _check_grant(scopes: list[str], models: list[str] | None) -> None:
    """403 unless the caller may grant ``scopes`` over ``models`` (None: every model)."""
    principal = current_principal()
    if principal is None or principal.reaches(scopes, models):
        return
    if principal.models is not None and models is None:
        allowed = ", ".join(sorted(principal.models))
        detail = f"This key is limited to the models {allowed}: a key it creates must name its models."
    else:
        detail = "A key cannot grant more than it has: choose scopes and models within this key's own."
    raise Forbidden(detail)


@blp.route("")
class Keys(MethodView):
    required_scope = "admin"

    @blp.response(200, KeyListSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Every key within the caller's reach (never its secret), revoked ones included."""
        return json_response({"keys": [k for k in candor().store.keys.list() if _in_reach(k)]})

    @blp.arguments(KeyCreateSchema)
    @blp.response(201, NewKeySchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def post(self, body: dict[str, Any]):  # type: ignore[no-untyped-def]
        """Create a key with scopes and an optional model allowlist; the token is in this answer only.

        A key limited to some models must name the new key's models, all among its own (else 403)."""
        _check_grant(body["scopes"], body.get("models"))
        token, principal = candor().store.keys.create(body["name"], body["scopes"], body.get("models"))
        return json_response({"key": token, **_described(principal.key_id)}, status=201)


@blp.route("/<key_id>")
class Key(MethodView):
    required_scope = "admin"

    @blp.response(200, KeySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, key_id: str):  # type: ignore[no-untyped-def]
        """One key (never its secret)."""
        return json_response(_described(key_id))

    @blp.response(200, KeySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    def delete(self, key_id: str):  # type: ignore[no-untyped-def]
        """Revoke a key: it fails from the next request on. The key stays listed (records name it)."""
        _not_the_callers_own(key_id)
        _described(key_id)
        if not candor().store.keys.revoke(key_id):
            raise NotFound(f"No key '{key_id}'.")
        return json_response(_described(key_id))


@blp.route("/<key_id>/rotate")
class RotateKey(MethodView):
    required_scope = "admin"

    @blp.response(200, NewKeySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    def post(self, key_id: str):  # type: ignore[no-untyped-def]
        """A new secret for the same key id, scopes and models; the old secret stops working at once."""
        _not_the_callers_own(key_id)
        _described(key_id)
        rotated = candor().store.keys.rotate(key_id)
        if rotated is None:
            raise NotFound(f"No active key '{key_id}'.")
        return json_response({"key": rotated[0], **_described(key_id)})

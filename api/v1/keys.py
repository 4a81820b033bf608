"""API key administration (``admin``): list, create, revoke and rotate keys. Secrets are shown once."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.auth import caller_key_id
from api.context import candor
from api.jsonio import json_response
from api.schemas.common import ProblemSchema
from api.schemas.keys import KeyCreateSchema, KeyListSchema, KeySchema, NewKeySchema
from api.v1.blueprint import Blueprint
from model_store.errors import Conflict, NotFound

blp = Blueprint("keys", __name__, url_prefix="/v1/keys", description="API key administration")


def _not_the_callers_own(key_id: str) -> None:
    """An admin key cannot revoke or rotate itself here, so a client cannot lock itself out by mistake."""
    if key_id == caller_key_id():
        raise Conflict("A key cannot revoke or rotate itself; use another admin key or the CLI.")


def _described(key_id: str) -> dict[str, Any]:
    described = candor().store.keys.describe(key_id)
    if described is None:
        raise NotFound(f"No key '{key_id}'.")
    return described


@blp.route("")
class Keys(MethodView):
    required_scope = "admin"

    @blp.response(200, KeyListSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Every key (never its secret), revoked ones included."""
        return json_response({"keys": candor().store.keys.list()})

    @blp.arguments(KeyCreateSchema)
    @blp.response(201, NewKeySchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def post(self, body: dict[str, Any]):  # type: ignore[no-untyped-def]
        """Create a key with scopes and an optional model allowlist; the token is in this answer only."""
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
        rotated = candor().store.keys.rotate(key_id)
        if rotated is None:
            raise NotFound(f"No active key '{key_id}'.")
        return json_response({"key": rotated[0], **_described(key_id)})

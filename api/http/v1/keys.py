"""API key administration (``admin``): list, create, revoke and rotate keys. Secrets are shown once.

A key administers only keys within its own reach (``Principal.reaches``): an admin key limited to some models
lists, reads, rotates and revokes only keys limited to those models (others are a 404, as if they did not
exist), and may create only such keys (anything more is a 403)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.http.auth import current_principal
from api.http.context import candor
from api.http.jsonio import json_response
from api.http.v1.blueprint import Blueprint
from api.schemas.common import ProblemSchema
from api.schemas.keys import KeyCreateSchema, KeyListSchema, KeySchema, NewKeySchema

blp = Blueprint("keys", __name__, url_prefix="/v1/keys", description="API key administration")


@blp.route("")
class Keys(MethodView):
    required_scope = "admin"

    @blp.response(200, KeyListSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Every key within the caller's reach (never its secret), revoked ones included."""
        return json_response({"keys": candor().key_admin.within_reach(current_principal())})

    @blp.arguments(KeyCreateSchema)
    @blp.response(201, NewKeySchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def post(self, body: dict[str, Any]):  # type: ignore[no-untyped-def]
        """Create a key with scopes and an optional model allowlist; the token is in this answer only.

        A key limited to some models must name the new key's models, all among its own (else 403)."""
        admin, caller = candor().key_admin, current_principal()
        return json_response(
            admin.create(caller, body["name"], body["scopes"], body.get("models")), status=201
        )


@blp.route("/<key_id>")
class Key(MethodView):
    required_scope = "admin"

    @blp.response(200, KeySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, key_id: str):  # type: ignore[no-untyped-def]
        """One key (never its secret)."""
        return json_response(candor().key_admin.get(current_principal(), key_id))

    @blp.response(200, KeySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    def delete(self, key_id: str):  # type: ignore[no-untyped-def]
        """Revoke a key: it fails from the next request on. The key stays listed (records name it)."""
        return json_response(candor().key_admin.revoke(current_principal(), key_id))


@blp.route("/<key_id>/rotate")
class RotateKey(MethodView):
    required_scope = "admin"

    @blp.response(200, NewKeySchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(409, schema=ProblemSchema)
    def post(self, key_id: str):  # type: ignore[no-untyped-def]
        """A new secret for the same key id, scopes and models; the old secret stops working at once."""
        return json_response(candor().key_admin.rotate(current_principal(), key_id))

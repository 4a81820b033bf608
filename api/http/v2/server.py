"""OIP V2 server routes: liveness and readiness (public, like /v1/health) and the server metadata."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView

from api.http.errors import problem
from api.http.v1.blueprint import Blueprint
from api.http.v1.system import not_ready
from api.schemas.oip_v2 import LiveSchema, OipProblemSchema, ReadySchema, ServerMetadataSchema

blp = Blueprint("oip_server", __name__, url_prefix="/v2", description="Open Inference Protocol V2: server")
EXTENSIONS = ["explain"]
"""``POST /v2/models/{name}/explain``: SHAP attributions as output tensors, recorded like V1 :explain."""


@blp.route("/health/live")
class Live(MethodView):
    candor_public = True

    @blp.response(200, LiveSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Server liveness: the process answers (no database call)."""
        return {"live": True}


@blp.route("/health/ready")
class Ready(MethodView):
    candor_public = True

    @blp.response(200, ReadySchema)
    @blp.alt_response(
        503, schema=OipProblemSchema, description="The database or a registered model is not available"
    )
    def get(self):  # type: ignore[no-untyped-def]
        """Server readiness, as ``/v1/ready``: the database answers and every registered model loads."""
        reason = not_ready()
        if reason is not None:
            return problem(503, "Service Unavailable", reason)
        return {"ready": True}


@blp.route("")
class Server(MethodView):
    required_scope = "explain"

    @blp.response(200, ServerMetadataSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Server metadata: name, version and the protocol extensions served."""
        return {"name": "candor", "version": current_app.config["API_VERSION"], "extensions": EXTENSIONS}

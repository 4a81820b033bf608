"""Liveness and readiness probes (public)."""

from __future__ import annotations

from flask.views import MethodView

from api.context import candor
from api.errors import problem
from api.schemas.common import HealthSchema, ProblemSchema
from api.v1.blueprint import Blueprint

blp = Blueprint("system", __name__, url_prefix="/v1", description="Health and readiness probes")


@blp.route("/health")
class Health(MethodView):
    candor_public = True

    @blp.response(200, HealthSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """Liveness: the process answers (no database call)."""
        return {"status": "ok"}


@blp.route("/ready")
class Ready(MethodView):
    candor_public = True

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=ProblemSchema, description="The database is unreachable")
    def get(self):  # type: ignore[no-untyped-def]
        """Readiness: the database answers."""
        if not candor().store.ping():
            return problem(503, "Service Unavailable", "The database is unreachable.")
        return {"status": "ready", "database": "ok"}

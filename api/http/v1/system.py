"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging

from flask.views import MethodView

from api.http.context import candor
from api.http.errors import problem
from api.http.v1.blueprint import Blueprint
from api.schemas.common import HealthSchema, ProblemSchema
from api.service.readiness import ModelReadiness

blp = Blueprint("system", __name__, url_prefix="/v1", description="Health and readiness probes")
log = logging.getLogger("candor.ready")


def readiness() -> ModelReadiness:
    """This app's model readiness (shared by /v1/ready, the model resources and /v2's ready routes)."""
    return candor().readiness


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
    @blp.alt_response(
        503,
        schema=ProblemSchema,
        description="The database is unreachable, or a registered model's serving version cannot be loaded",
    )
    def get(self):  # type: ignore[no-untyped-def]
        """Readiness: the database answers and every registered model can be loaded.

        Each model's serving version (production, else latest) loads once per worker, then is remembered."""
        reason = not_ready()
        if reason is not None:
            return problem(503, "Service Unavailable", reason)
        return {"status": "ready", "database": "ok"}


def not_ready() -> str | None:
    """Why the server is not ready, or None: the database is unreachable or a model cannot be loaded."""
    return readiness().not_ready()

"""Liveness and readiness probes (public)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import current_app
from flask.views import MethodView
from sqlalchemy.exc import SQLAlchemyError

from api.context import candor
from api.errors import problem
from api.schemas.common import HealthSchema, ProblemSchema
from api.v1.blueprint import Blueprint
from model_store.registry import ModelRegistry

blp = Blueprint("system", __name__, url_prefix="/v1", description="Health and readiness probes")
log = logging.getLogger("candor.ready")
RETRY_FAILED_SECONDS = 10.0
"""A version that failed to load is tried again by the first probe after this long (not by every probe)."""


class ModelReadiness:
    """Whether the serving version (production, else latest) of every registered model loads in this worker.

    A version that loaded once is not loaded again by later probes (versions are immutable and were verified
    against their sha256), so after the first probe each costs a few queries. An empty registry is ready."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._loaded: set[Any] = set()
        self._failed_at: dict[Any, float] = {}
        self._lock = threading.Lock()

    def unloadable(self) -> list[str]:
        """Names of the models whose serving version cannot be loaded."""
        failing = []
        for summary in self.registry.list_models():
            number = summary["production_version"] or summary["latest_version"]
            if number is not None and not self._loads(summary["name"], number):
                failing.append(summary["name"])
        return failing

    def serves(self, summary: dict[str, Any]) -> bool:
        """Whether a model (its ``list_models`` summary) has a serving version that loads."""
        number = summary["production_version"] or summary["latest_version"]
        return number is not None and self._loads(summary["name"], number)

    def version_loads(self, name: str, number: int) -> bool:
        """Whether that version of the model loads (a failure is logged and retried later)."""
        return self._loads(name, number)

    def _loads(self, name: str, number: int) -> bool:
        info = self.registry.resolve(name, number)
        key = info.cache_key
        with self._lock:
            if key in self._loaded:
                return True
            failed_at = self._failed_at.get(key)
            if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_SECONDS:
                return False
        try:
            self.registry.load(info)
        except Exception:
            log.warning("readiness: %s version %s cannot be loaded", name, number, exc_info=True)
            with self._lock:
                self._failed_at[key] = time.monotonic()
            return False
        with self._lock:
            self._loaded.add(key)
            self._failed_at.pop(key, None)
        return True


def readiness() -> ModelReadiness:
    """This worker's model readiness (shared by /v1/ready, the model resources and /v2's ready routes)."""
    extensions = current_app.extensions
    if "candor.readiness" not in extensions:
        extensions.setdefault("candor.readiness", ModelReadiness(candor().store.registry))
    return extensions["candor.readiness"]  # type: ignore[no-any-return]


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
    if not candor().store.ping():
        return "The database is unreachable."
    try:
        failing = readiness().unloadable()
    except SQLAlchemyError:
        log.warning("readiness: the database failed during the model check", exc_info=True)
        return "The database is unreachable."
    if failing:
        return f"{len(failing)} registered model(s) cannot be loaded; the server log names them."
    return None

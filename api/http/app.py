"""The Flask application factory."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from flask import Flask, request
from flask_smorest import Api

from api.http import auth, docs, explorer, observability, openapi_contract, routing
from api.http.context import Candor
from api.http.errors import problem, register_error_handlers
from api.http.jsonio import OrjsonProvider
from api.http.parser import NUL_MESSAGE
from api.http.rate_limit import KeyRateLimiter
from api.http.v1 import audit, explain, jobs, keys, kserve, metrics, models, plots, system, understanding
from api.http.v2 import models as oip_models
from api.http.v2 import server as oip_server
from api.schemas.common import ProblemSchema
from api.service.metrics import scrape_registry
from api.settings import Settings
from model_store.store import Store

API_VERSION = "1.0.0"
JSON_MIMETYPES = {"application/json"}
UPLOAD_ENDPOINTS = {"models.Versions"}
UPLOAD_OR_JSON_ENDPOINTS = {"jobs.Jobs"}
"""Endpoints taking multipart/form-data (with the upload limit) or a JSON body."""


class CandorApi(Api):
    ERROR_SCHEMA = ProblemSchema
    DEFAULT_ERROR_RESPONSE_NAME = "Problem"

    def _register_error_handlers(self) -> None:
        """Errors are handled by ``api.http.errors`` (RFC 9457), not flask-smorest's default payload."""


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; ``test_config`` overrides settings by their lower-case field names."""
    settings = Settings.load(test_config)
    warnings.filterwarnings("ignore", message=".*does not have valid feature names.*")
    app = Flask(__name__, static_folder=None)
    observability.init_app(app, settings.log_level)
    app.url_map.merge_slashes = False  # "a//b" is a 404 problem, not an HTML redirect to a rewritten path
    routing.init_app(app)
    app.json = OrjsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Candor",
        API_VERSION=API_VERSION,
        OPENAPI_VERSION="3.0.3",
        API_SPEC_OPTIONS={
            "info": {"description": docs.API_DESCRIPTION},
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearerAuth": []}],
        },
    )
    store = Store(
        settings.data_dir,
        settings.resolved_database_url,
        settings.model_cache_size,
        artifact_store=settings.artifact_store,
    )
    app.extensions["candor"] = Candor.build(settings, store)
    api = CandorApi(app)
    for blueprint in (
        system.blp,
        models.blp,
        explain.blp,
        kserve.blp,
        audit.blp,
        keys.blp,
        jobs.blp,
        plots.blp,
        understanding.blp,
        oip_server.blp,
        oip_models.blp,
    ):
        api.register_blueprint(blueprint)
    metrics.init_app(app, api, scrape_registry(store.sessions))
    openapi_contract.finish(api, settings)
    docs.init_app(app, api)
    explorer.init_app(app)
    register_error_handlers(app)
    auth.init_app(app, store.keys, KeyRateLimiter(settings.rate_limit, settings.rate_limit_storage))
    _limit_bodies(app, settings)
    _refuse_nul_characters(app)
    return app


def _limit_bodies(app: Flask, settings: Settings) -> None:
    @app.before_request
    def _check_body() -> Any:
        if request.method not in ("POST", "PUT", "PATCH") or request.endpoint is None:
            return None
        multipart = request.mimetype == "multipart/form-data"
        if request.endpoint in UPLOAD_ENDPOINTS or (
            request.endpoint in UPLOAD_OR_JSON_ENDPOINTS and multipart
        ):
            request.max_content_length = settings.max_upload_bytes
            if request.mimetype != "multipart/form-data":
                return problem(415, "Unsupported Media Type", "Send multipart/form-data.")
            return None
        chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
        if not request.content_length and not chunked:
            return None  # no body (e.g. promote): nothing to parse
        if request.mimetype not in JSON_MIMETYPES:
            return problem(415, "Unsupported Media Type", "Send application/json.")
        return None


def _refuse_nul_characters(app: Flask) -> None:
    """NUL in a path is a 404 (no resource has one); in a query or form field, a 422 naming it."""

    @app.before_request
    def _check_nul() -> Any:
        if "\x00" in request.path:
            return problem(404, "Not Found", "No resource has a NUL character in its path.")
        fields = list(request.args.items(multi=True))
        if request.mimetype == "multipart/form-data":
            fields += list(request.form.items(multi=True))
        for name, value in fields:
            if "\x00" in name or "\x00" in value:
                field = name.replace("\x00", "")
                return problem(
                    422, "Invalid input", "NUL characters are not accepted.", {field: [NUL_MESSAGE]}
                )
        return None

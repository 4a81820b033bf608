"""Models and versions: list, describe, register (multipart) and promote."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.http.auth import caller_models
from api.http.context import candor
from api.http.schemas.uploads import RegisterFilesSchema
from api.http.v1.blueprint import Blueprint
from api.schemas.common import ProblemSchema
from api.schemas.models import ModelDetailSchema, ModelListSchema, RegisterFormSchema, VersionDetailSchema

blp = Blueprint("models", __name__, url_prefix="/v1/models", description="Registered models and versions")


@blp.route("")
class Models(MethodView):
    required_scope = "explain"

    @blp.response(200, ModelListSchema)
    def get(self):  # type: ignore[no-untyped-def]
        """List the registered models."""
        return {"models": candor().models.visible(caller_models())}


@blp.route("/<name>")
class Model(MethodView):
    required_scope = "explain"

    @blp.response(200, ModelDetailSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, name: str):  # type: ignore[no-untyped-def]
        """A model with its versions and stages; ``ready``: its serving version (production, else latest)
        loads in this server (what KServe clients read)."""
        return candor().models.get(name)


@blp.route("/<name>/versions")
class Versions(MethodView):
    required_scope = "models:write"

    @blp.arguments(RegisterFormSchema, location="form")
    @blp.arguments(RegisterFilesSchema, location="files")
    @blp.response(201, VersionDetailSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def post(self, form: dict[str, Any], files: dict[str, Any], name: str):  # type: ignore[no-untyped-def]
        """Register a new version: manifest (JSON/YAML text), artifact (none for a remote model) and
        reference data."""
        reference, artifact = files.get("reference"), files.get("artifact")
        sent = reference.read() if reference is not None else None
        stream = artifact.stream if artifact is not None else None
        return candor().models.register(name, form["manifest"], stream, sent)


@blp.route("/<name>/versions/<version>")
class Version(MethodView):
    required_scope = "explain"

    @blp.response(200, VersionDetailSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """A version: completed manifest, sha256, stages and the explanation methods that apply.

        ``version`` is a number, ``latest`` or ``production``."""
        return candor().service.describe_version(name, version)


@blp.route("/<name>/versions/<version>/promote")
class Promote(MethodView):
    required_scope = "models:write"

    @blp.response(200, VersionDetailSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Make this version the model's ``production`` stage."""
        return candor().models.promote(name, version)

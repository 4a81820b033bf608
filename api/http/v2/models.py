"""OIP V2 model routes: metadata, readiness, ``infer`` and the ``explain`` extension (SHAP, recorded).

Without ``/versions/{version}`` a route serves the production version, else the latest (as KServe V1's verbs);
``version`` is a number, ``latest`` or ``production``. Predictions and explanations go through the service
layer, so records, limits and ``Idempotency-Key`` work as on V1."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from marshmallow import ValidationError

from api.http.context import candor
from api.http.errors import problem
from api.http.jsonio import json_response
from api.http.v1.blueprint import Blueprint
from api.http.v1.explain import EXPLAINED_HEADERS, IDEMPOTENCY_PARAMETER, explain_answer
from api.http.v1.system import readiness
from api.http.v2.examples import LOAN_EXPLAIN_REQUEST, LOAN_REQUEST
from api.http.v2.outputs import explanation_outputs, prediction_outputs, requested
from api.http.v2.tensors import feature_datatype, tabular_instances, text_instances
from api.schemas.explain import ShapOptionsSchema
from api.schemas.oip_v2 import (
    InferRequestSchema,
    InferResponseSchema,
    ModelMetadataSchema,
    ModelReadySchema,
    OipProblemSchema,
)
from model_store.errors import InvalidInput
from model_store.manifest import flatten_messages
from model_store.versions import VersionInfo

blp = Blueprint(
    "oip_models", __name__, url_prefix="/v2/models", description="Open Inference Protocol V2: models"
)
VERSIONED = "/<name>/versions/<version>"
SHAP_PARAMETERS = ("algorithm", "output", "target", "seed", "max_evals", "background_rows")


def _resolve(name: str, version: str | None) -> VersionInfo:
    """The version asked for; without one, what KServe routes serve: production, else the latest."""
    models = candor().models
    return models.resolve(name, version) if version is not None else models.serving(name)


def _instances(info: VersionInfo, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return text_instances(inputs) if info.flavour == "text" else tabular_instances(inputs, info.manifest)


def metadata(name: str, version: str | None) -> dict[str, Any]:
    """The model's tensors: one input per feature (manifest order) or ``text``, and its outputs."""
    info = _resolve(name, version)
    manifest = info.manifest
    versions = candor().models.version_numbers(name) if version is None else [str(info.version)]
    if info.flavour == "text":
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    else:
        inputs = [{"name": f.name, "datatype": feature_datatype(f), "shape": [-1]} for f in manifest.features]
    if manifest.is_classification:
        width = len(manifest.classes) if manifest.classes else -1
        outputs = [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, width]},
        ]
    else:
        outputs = [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    platform = f"candor-{info.flavour}"
    return {"name": name, "versions": versions, "platform": platform, "inputs": inputs, "outputs": outputs}


def ready(name: str, version: str | None) -> Any:
    info = _resolve(name, version)
    if not readiness().version_loads(info.name, info.version):
        detail = f"Model '{name}' version {info.version} cannot be loaded; the server log says why."
        return problem(503, "Service Unavailable", detail)
    return {"name": name, "ready": True}


def infer(body: dict[str, Any], name: str, version: str | None) -> Any:
    info = _resolve(name, version)
    result = candor().service.predict(name, str(info.version), _instances(info, body["inputs"]))
    return {
        "model_name": name,
        "model_version": str(info.version),
        "id": body.get("id") or uuid.uuid4().hex,
        "outputs": requested(prediction_outputs(result["predictions"]), body.get("outputs")),
    }


def _shap_options(parameters: dict[str, Any]) -> dict[str, Any]:
    try:
        options: dict[str, Any] = ShapOptionsSchema(only=SHAP_PARAMETERS).load(parameters)
    except ValidationError as exc:
        errors = {f"parameters.{k}": v for k, v in flatten_messages(exc.messages).items()}
        raise InvalidInput(
            "Explain takes the SHAP options " + ", ".join(SHAP_PARAMETERS) + ".", errors
        ) from exc
    return {**options, "layout": "columnar"}


def explain(body: dict[str, Any], name: str, version: str | None) -> Any:
    """SHAP attributions as tensors, computed and recorded (or read back for a repeated Idempotency-Key)."""
    info = _resolve(name, version)
    options = _shap_options(body.get("parameters") or {})
    instances = _instances(info, body["inputs"])
    asked = "default" if version is None else version
    envelope, headers = explain_answer("shap", name, str(info.version), instances, options, asked=asked)
    output = envelope["output"]
    parameters = {"explanation_id": envelope["id"], "output_space": output["space"]}
    if output["target"] is not None:
        parameters["target"] = output["target"]
    answer = {
        "model_name": name,
        "model_version": str(envelope["model"]["version"]),
        "id": body.get("id") or envelope["id"],
        "parameters": parameters,
        "outputs": requested(explanation_outputs(envelope), body.get("outputs")),
    }
    return json_response(answer, headers=headers)


NOT_FOUND = {"status_code": 404, "schema": OipProblemSchema}
INVALID = {"status_code": 422, "schema": OipProblemSchema}
UNAVAILABLE = {"status_code": 503, "schema": OipProblemSchema, "description": "The model cannot be loaded"}


@blp.route("/<name>")
class Metadata(MethodView):
    required_scope = "explain"

    @blp.response(200, ModelMetadataSchema)
    @blp.alt_response(**NOT_FOUND)
    def get(self, name: str):  # type: ignore[no-untyped-def]
        """Model metadata of the serving version: its versions, input and output tensors."""
        return metadata(name, None)


@blp.route(VERSIONED)
class VersionMetadata(MethodView):
    required_scope = "explain"

    @blp.response(200, ModelMetadataSchema)
    @blp.alt_response(**NOT_FOUND)
    def get(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Model metadata of one version."""
        return metadata(name, version)


@blp.route("/<name>/ready")
class Ready(MethodView):
    required_scope = "explain"

    @blp.response(200, ModelReadySchema)
    @blp.alt_response(**NOT_FOUND)
    @blp.alt_response(**UNAVAILABLE)
    def get(self, name: str):  # type: ignore[no-untyped-def]
        """Model readiness: the serving version loads."""
        return ready(name, None)


@blp.route(f"{VERSIONED}/ready")
class VersionReady(MethodView):
    required_scope = "explain"

    @blp.response(200, ModelReadySchema)
    @blp.alt_response(**NOT_FOUND)
    @blp.alt_response(**UNAVAILABLE)
    def get(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Readiness of one version: it loads."""
        return ready(name, version)


@blp.route("/<name>/infer")
class Infer(MethodView):
    required_scope = "explain"

    @blp.arguments(InferRequestSchema, example=LOAN_REQUEST)
    @blp.response(200, InferResponseSchema)
    @blp.alt_response(**INVALID)
    @blp.alt_response(**NOT_FOUND)
    def post(self, body: dict[str, Any], name: str):  # type: ignore[no-untyped-def]
        """Inference on the serving version: one tensor [n, features] in the manifest's order, or one input
        per feature (a text model: one BYTES input of texts); answers ``label`` and ``probabilities``, or
        ``value``."""
        return infer(body, name, None)


@blp.route(f"{VERSIONED}/infer")
class VersionInfer(MethodView):
    required_scope = "explain"

    @blp.arguments(InferRequestSchema, example=LOAN_REQUEST)
    @blp.response(200, InferResponseSchema)
    @blp.alt_response(**INVALID)
    @blp.alt_response(**NOT_FOUND)
    def post(self, body: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Inference on one version (inputs and outputs as for the serving version)."""
        return infer(body, name, version)


@blp.route("/<name>/explain", parameters=[IDEMPOTENCY_PARAMETER])
class Explain(MethodView):
    required_scope = "explain"

    @blp.arguments(InferRequestSchema, example=LOAN_EXPLAIN_REQUEST)
    @blp.response(200, InferResponseSchema, headers=EXPLAINED_HEADERS)
    @blp.alt_response(**INVALID)
    @blp.alt_response(**NOT_FOUND)
    def post(self, body: dict[str, Any], name: str):  # type: ignore[no-untyped-def]
        """Explain extension: SHAP attributions of the serving version as tensors (``attributions``
        [n, features], ``base_value``, ``output_value``, then the prediction's), recorded in the audit trail
        (its id in the parameter ``explanation_id``); request parameters are SHAP options."""
        return explain(body, name, None)


@blp.route(f"{VERSIONED}/explain", parameters=[IDEMPOTENCY_PARAMETER])
class VersionExplain(MethodView):
    required_scope = "explain"

    @blp.arguments(InferRequestSchema, example=LOAN_EXPLAIN_REQUEST)
    @blp.response(200, InferResponseSchema, headers=EXPLAINED_HEADERS)
    @blp.alt_response(**INVALID)
    @blp.alt_response(**NOT_FOUND)
    def post(self, body: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Explain extension on one version (as for the serving version)."""
        return explain(body, name, version)

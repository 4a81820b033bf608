"""KServe V1 protocol verbs: ``:predict`` and ``:explain`` on the production version (else the latest)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.http.context import candor
from api.http.jsonio import json_response
from api.http.v1.blueprint import Blueprint
from api.http.v1.explain import EXPLAINED_HEADERS, IDEMPOTENCY_PARAMETER, explain_answer
from api.schemas.common import ProblemSchema
from api.schemas.explain import ExplanationSchema
from api.schemas.models import KServePredictResponseSchema, KServeRequestSchema
from api.schemas.plots import NarrativeQuerySchema
from model_store.errors import VersionNotFound

blp = Blueprint("kserve", __name__, url_prefix="/v1/models", description="KServe V1 compatibility")


def default_version(name: str) -> str:
    """The version KServe routes without a version serve: production, else the latest."""
    try:
        return str(candor().models.resolve(name, "production").version)
    except VersionNotFound:
        return "latest"


@blp.route("/<name>:predict")
class KServePredict(MethodView):
    required_scope = "explain"

    @blp.arguments(KServeRequestSchema)
    @blp.response(200, KServePredictResponseSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], name: str):  # type: ignore[no-untyped-def]
        """KServe V1 predict: ``{"instances": [...]}`` -> ``{"predictions": [...]}``."""
        result = candor().service.predict(name, default_version(name), body["instances"])
        predictions = result["predictions"]
        payload: dict[str, Any] = {
            "predictions": [p.get("label", p.get("value")) for p in predictions],
            "model_name": result["model"]["name"],
            "model_version": str(result["model"]["version"]),
        }
        if predictions and "probabilities" in predictions[0]:
            payload["probabilities"] = [p["probabilities"] for p in predictions]
        return json_response(payload)


@blp.route("/<name>:explain", parameters=[IDEMPOTENCY_PARAMETER])
class KServeExplain(MethodView):
    required_scope = "explain"

    @blp.arguments(KServeRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, ExplanationSchema, headers=EXPLAINED_HEADERS)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str):  # type: ignore[no-untyped-def]
        """KServe V1 explain: SHAP attributions with the model's defaults, as an Explanation envelope."""
        version, instances = default_version(name), body["instances"]
        narrative = bool(query["narrative"])
        envelope, headers = explain_answer(
            "shap", name, version, instances, {}, "default", narrative, results_as_json=True
        )
        return json_response(envelope, headers=headers)

"""Predictions, SHAP attributions and global importance for one model version."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from api.auth import caller_key_id
from api.context import candor
from api.jsonio import dumps_bytes, json_response
from api.schemas.common import ProblemSchema
from api.schemas.explain import ExplanationSchema, ImportanceSchema, ShapRequestSchema
from api.schemas.models import PredictResponseSchema
from api.schemas.plots import NarrativeQuerySchema
from api.schemas.recourse import (
    CounterfactualExplanationSchema,
    CounterfactualRequestSchema,
    ReasonsExplanationSchema,
    ReasonsRequestSchema,
)
from api.schemas.text import (
    AttentionHttpRequestSchema,
    AttributionsRequestSchema,
    TextExplanationSchema,
    TextInstancesSchema,
)
from api.v1.blueprint import Blueprint
from explainers.envelope import Explanation

blp = Blueprint(
    "explain",
    __name__,
    url_prefix="/v1/models/<name>/versions/<version>",
    description="Predictions and explanations",
)


def _explanation(
    method: str, body: dict[str, Any], query: dict[str, Any], name: str, version: str
) -> Explanation:
    """Run ``method`` on the request's instances with the rest of the body (and ``narrative``) as options."""
    instances = body.pop("instances")
    if query["narrative"]:
        body["narrative"] = True  # recorded with the options, so a replay recomputes the summaries
    return candor().service.explain(method, name, version, instances, body, key_id=caller_key_id())


def _explained(method: str, body: dict[str, Any], query: dict[str, Any], name: str, version: str) -> Response:
    return json_response(_explanation(method, body, query, name, version).to_dict())


SAFETENSORS_DOC = {
    "responses": {
        "200": {
            "description": "The explanation: JSON, or with encoding safetensors a safetensors file",
            "content": {
                "application/json": {"schema": TextExplanationSchema},
                "application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"},
                    "example": "(a safetensors file; see the request's encoding)",
                },
            },
        }
    }
}


@blp.route("/predict")
class Predict(MethodView):
    required_scope = "explain"

    @blp.arguments(TextInstancesSchema)
    @blp.response(200, PredictResponseSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Predicted label and probabilities (or value) per instance; ``{"text": ...}`` for text models."""
        service = candor().service
        return json_response(service.predict(name, version, body["instances"], bool(body.get("truncate"))))


@blp.route("/explain/shap")
class ExplainShap(MethodView):
    required_scope = "explain"

    @blp.arguments(ShapRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, ExplanationSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """SHAP attributions per raw input feature, in a stated output space and target class."""
        return _explained("shap", body, query, name, version)


@blp.route("/explain/counterfactuals")
class ExplainCounterfactuals(MethodView):
    required_scope = "explain"

    @blp.arguments(CounterfactualRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, CounterfactualExplanationSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Counterfactuals: the smallest realistic changes that reach the desired outcome, each re-scored by
        the model and checked against every constraint of the manifest and the request."""
        return _explained("counterfactuals", body, query, name, version)


@blp.route("/explain/reasons")
class ExplainReasons(MethodView):
    required_scope = "explain"

    @blp.arguments(ReasonsRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, ReasonsExplanationSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Adverse-action reasons for declined applications, ranked, from the manifest's reason catalogue."""
        return _explained("reasons", body, query, name, version)


@blp.route("/explain/attention")
class ExplainAttention(MethodView):
    required_scope = "explain"

    @blp.arguments(AttentionHttpRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, TextExplanationSchema)
    @blp.doc(**SAFETENSORS_DOC)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Attention weights of a text classifier for selected layers and heads (rows sum to 1).

        With ``encoding: "safetensors"`` the answer is a safetensors file (application/octet-stream): the
        weights as its tensors, the envelope as JSON in its ``__metadata__["explanation"]``.
        """
        explanation = _explanation("attention", body, query, name, version)
        if explanation.method.params.get("encoding") != "safetensors":
            return json_response(explanation.to_dict())
        from explainers.attention import safetensors_body  # torch loads only for text models

        return Response(
            safetensors_body(explanation.to_dict(), dumps_bytes),
            mimetype="application/octet-stream",
            headers={"Content-Disposition": f'inline; filename="{explanation.id}.safetensors"'},
        )


@blp.route("/explain/attributions")
class ExplainAttributions(MethodView):
    required_scope = "explain"

    @blp.arguments(AttributionsRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, TextExplanationSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Captum token attributions of a text classifier, also merged into words with character offsets."""
        return _explained("attributions", body, query, name, version)


@blp.route("/importance")
class Importance(MethodView):
    required_scope = "explain"

    @blp.response(200, ImportanceSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Global importance: mean |SHAP| per feature over the reference data (computed once per version)."""
        return json_response(candor().service.importance(name, version))

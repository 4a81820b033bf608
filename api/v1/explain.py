"""Predictions, SHAP attributions and global importance for one model version."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from api.auth import caller_key_id
from api.context import candor
from api.idempotency import REPLAYED_HEADER, header_parameter, idempotency_key, replayed_header
from api.jsonio import dumps_bytes, json_response
from api.keyed_explain import ExplainRequest, explain_keyed
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

blp = Blueprint(
    "explain",
    __name__,
    url_prefix="/v1/models/<name>/versions/<version>",
    description="Predictions and explanations",
)


def _answer(
    method: str, body: dict[str, Any], query: dict[str, Any], name: str, version: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Run ``method`` on the request's instances with the rest of the body (and ``narrative``) as options:
    the envelope and the answer's headers (``Idempotent-Replayed`` when an ``Idempotency-Key`` sent again
    with the same request is answered from its record)."""
    instances = body.pop("instances")
    if query["narrative"]:
        body["narrative"] = True  # recorded with the options, so a replay recomputes the summaries
    return explain_answer(method, name, version, instances, body)


def explain_answer(
    method: str,
    name: str,
    version: str,
    instances: list[Any],
    options: dict[str, Any],
    asked: str | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """An explain route's envelope and headers, computed and recorded, or read back for a repeated key;
    ``asked``: the version as the route names it, when ``version`` is resolved from it (KServe)."""
    service, key_id, key = candor().service, caller_key_id(), idempotency_key()
    if key is None or key_id is None:
        return service.explain(method, name, version, instances, options, key_id).to_dict(), {}
    request = ExplainRequest(method, name, version, asked or version, instances, options)
    envelope, replayed = explain_keyed(service, request, key_id, key)
    return envelope, {REPLAYED_HEADER: "true"} if replayed else {}


def _explained(method: str, body: dict[str, Any], query: dict[str, Any], name: str, version: str) -> Response:
    envelope, headers = _answer(method, body, query, name, version)
    return json_response(envelope, headers=headers)


IDEMPOTENCY_PARAMETER = header_parameter(
    "Makes a retry safe: the same key sent again with the same request answers with the explanation "
    "recorded first (read back from its audit record, not computed again), so a retried request leaves one "
    "record; with a different request, 422. Remembered per API key for as long as the record is kept."
)
EXPLAINED_HEADERS = replayed_header("the explanation recorded")


SAFETENSORS_DOC = {
    "responses": {
        "200": {
            "description": "The explanation: JSON, or with encoding safetensors a safetensors file",
            "headers": EXPLAINED_HEADERS,
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


@blp.route("/explain/shap", parameters=[IDEMPOTENCY_PARAMETER])
class ExplainShap(MethodView):
    required_scope = "explain"

    @blp.arguments(ShapRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, ExplanationSchema, headers=EXPLAINED_HEADERS)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """SHAP attributions per raw input feature, in a stated output space and target class."""
        return _explained("shap", body, query, name, version)


@blp.route("/explain/counterfactuals", parameters=[IDEMPOTENCY_PARAMETER])
class ExplainCounterfactuals(MethodView):
    required_scope = "explain"

    @blp.arguments(CounterfactualRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, CounterfactualExplanationSchema, headers=EXPLAINED_HEADERS)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Counterfactuals: the smallest realistic changes that reach the desired outcome, each re-scored by
        the model and checked against every constraint of the manifest and the request."""
        return _explained("counterfactuals", body, query, name, version)


@blp.route("/explain/reasons", parameters=[IDEMPOTENCY_PARAMETER])
class ExplainReasons(MethodView):
    required_scope = "explain"

    @blp.arguments(ReasonsRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, ReasonsExplanationSchema, headers=EXPLAINED_HEADERS)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Adverse-action reasons for declined applications, ranked, from the manifest's reason catalogue."""
        return _explained("reasons", body, query, name, version)


@blp.route("/explain/attention", parameters=[IDEMPOTENCY_PARAMETER])
class ExplainAttention(MethodView):
    required_scope = "explain"

    @blp.arguments(AttentionHttpRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, TextExplanationSchema, headers=EXPLAINED_HEADERS)
    @blp.doc(**SAFETENSORS_DOC)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def post(self, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Attention weights of a text classifier for selected layers and heads (rows sum to 1).

        With ``encoding: "safetensors"`` the answer is a safetensors file (application/octet-stream): the
        weights as its tensors, the envelope as JSON in its ``__metadata__["explanation"]``.
        """
        envelope, headers = _answer("attention", body, query, name, version)
        if envelope["method"]["params"].get("encoding") != "safetensors":
            return json_response(envelope, headers=headers)
        from explainers.attention import safetensors_body  # torch loads only for text models

        return Response(
            safetensors_body(envelope, dumps_bytes),
            mimetype="application/octet-stream",
            headers={**headers, "Content-Disposition": f'inline; filename="{envelope["id"]}.safetensors"'},
        )


@blp.route("/explain/attributions", parameters=[IDEMPOTENCY_PARAMETER])
class ExplainAttributions(MethodView):
    required_scope = "explain"

    @blp.arguments(AttributionsRequestSchema)
    @blp.arguments(NarrativeQuerySchema, location="query")
    @blp.response(200, TextExplanationSchema, headers=EXPLAINED_HEADERS)
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

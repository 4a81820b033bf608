"""Predictions, every explanation method's route (one per ``api.methods`` spec) and global importance for one
model version."""

from __future__ import annotations

from typing import Any

import flask
from flask import Response
from flask.views import MethodView

from api.http.auth import caller_key_id
from api.http.context import candor
from api.http.jsonio import dumps_bytes, json_response
from api.http.v1.blueprint import Blueprint
from api.methods.registry import specs
from api.methods.spec import MethodSpec
from api.schemas.common import ProblemSchema
from api.schemas.explain import ImportanceSchema
from api.schemas.models import PredictResponseSchema
from api.schemas.plots import NarrativeQuerySchema
from api.schemas.text import TextInstancesSchema
from api.service.explain_request import ExplainRequest
from api.service.idempotency import REPLAYED_HEADER, header_parameter, idempotency_key, replayed_header

blp = Blueprint(
    "explain",
    __name__,
    url_prefix="/v1/models/<name>/versions/<version>",
    description="Predictions and explanations",
)


def _answer(
    method: str, body: dict[str, Any], query: dict[str, Any], name: str, version: str
) -> tuple[dict[str, Any], dict[str, str]]:
    """Run ``method`` on the request's instances with the rest of the body as options (and the narrative
    when the query asks for it): the envelope and the answer's headers (``Idempotent-Replayed`` when an
    ``Idempotency-Key`` sent again with the same request is answered from its record)."""
    instances = body.pop("instances", [])  # none sent: a method with instances_optional draws its own
    narrative = bool(query["narrative"])
    return explain_answer(method, name, version, instances, body, narrative=narrative, results_as_json=True)


def explain_answer(
    method: str,
    name: str,
    version: str,
    instances: list[Any],
    options: dict[str, Any],
    asked: str | None = None,
    narrative: bool = False,
    results_as_json: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """An explain route's envelope and headers, computed and recorded, or read back for a repeated key;
    ``asked``: the version as the route names it, when ``version`` is resolved from it (KServe);
    ``results_as_json``: the route only serialises the envelope (``ExplainRequest``)."""
    request = ExplainRequest(
        method,
        name,
        version,
        instances,
        options,
        narrative=narrative,
        asked=asked,
        key_id=caller_key_id(),
        idempotency_key=idempotency_key(flask.request.headers),
        results_as_json=results_as_json,
    )
    envelope, replayed = candor().service.answer(request)
    return envelope, {REPLAYED_HEADER: "true"} if replayed else {}


IDEMPOTENCY_PARAMETER = header_parameter(
    "Makes a retry safe: the same key sent again with the same request answers with the explanation "
    "recorded first (read back from its audit record, not computed again), so a retried request leaves one "
    "record; with a different request, 422. Remembered per API key for as long as the record is kept."
)
EXPLAINED_HEADERS = replayed_header("the explanation recorded")


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


def _explain_view(spec: MethodSpec) -> type[MethodView]:
    """The explain route of ``spec``: its request schema in, its response schema out (and a file instead of
    JSON when the method writes one for the request, as attention's ``encoding: "safetensors"``)."""

    def post(self: MethodView, body: dict[str, Any], query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        envelope, headers = _answer(spec.name, body, query, name, version)
        file = spec.file_answer(envelope, dumps_bytes) if spec.file_answer is not None else None
        if file is None:
            return json_response(envelope, headers=headers)
        disposition = f'inline; filename="{envelope["id"]}.{spec.file_suffix}"'
        return Response(
            file, mimetype="application/octet-stream", headers={**headers, "Content-Disposition": disposition}
        )

    post.__doc__ = spec.summary
    post = blp.alt_response(404, schema=ProblemSchema)(post)
    post = blp.alt_response(422, schema=ProblemSchema)(post)
    if spec.file_answer is not None:
        post = blp.doc(**_file_doc(spec))(post)
    post = blp.response(200, spec.response_schema, headers=EXPLAINED_HEADERS)(post)
    post = blp.arguments(NarrativeQuerySchema, location="query")(post)
    post = blp.arguments(spec.request_schema)(post)
    view = type(
        f"Explain{spec.name.capitalize()}", (MethodView,), {"required_scope": "explain", "post": post}
    )
    return blp.route(spec.path, parameters=[IDEMPOTENCY_PARAMETER])(view)


def _file_doc(spec: MethodSpec) -> dict[str, Any]:
    return {
        "responses": {
            "200": {
                "description": f"The explanation: JSON, or {spec.file_description}",
                "headers": EXPLAINED_HEADERS,
                "content": {
                    "application/json": {"schema": spec.response_schema},
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                        "example": spec.file_example,
                    },
                },
            }
        }
    }


for _spec in specs():
    _explain_view(_spec)


@blp.route("/importance")
class Importance(MethodView):
    required_scope = "explain"

    @blp.response(200, ImportanceSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    def get(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Global importance: mean |SHAP| per feature over the reference data (computed once per version)."""
        return json_response(candor().service.importance(name, version))

"""Understanding a tabular version's data: the profile of its reference rows and the segments its SHAP
attributions form (out-of-distribution flags ride on every tabular explanation instead)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from api.http.context import candor
from api.http.jsonio import json_response
from api.http.v1.blueprint import Blueprint
from api.schemas.common import ProblemSchema
from api.schemas.understanding import ProfileSchema, SegmentsQuerySchema, SegmentsSchema

blp = Blueprint(
    "understanding",
    __name__,
    url_prefix="/v1/models/<name>/versions/<version>",
    description="The reference data's profile and the segments of its explanations",
)


@blp.route("/profile")
class Profile(MethodView):
    required_scope = "explain"

    @blp.response(200, ProfileSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, name: str, version: str):  # type: ignore[no-untyped-def]
        """Per-feature summaries of the reference data, Pearson/Spearman and Cramér's V correlations, the
        rows the isolation forest finds most anomalous, and a plain-language summary (once per version)."""
        return json_response(candor().service.profile(name, version))


@blp.route("/segments")
class Segments(MethodView):
    required_scope = "explain"

    @blp.arguments(SegmentsQuerySchema, location="query")
    @blp.response(200, SegmentsSchema)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """The reference rows clustered by their SHAP attributions (KMeans, k by silhouette within
        2..k_max), each segment described by its dominant features and outcome rate (once per k_max)."""
        return json_response(candor().service.segments(name, version, query["k_max"]))

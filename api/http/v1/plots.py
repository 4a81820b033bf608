"""Pictures: a recorded explanation as SVG or PNG (``audit:read``, like reading the record), and a version's
global importance as bars or a beeswarm (``explain``)."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from api.http.auth import caller_models
from api.http.context import candor
from api.http.v1.blueprint import Blueprint
from api.methods.pictures import sizes
from api.schemas.common import ProblemSchema
from api.schemas.plots import (
    BertvizQuerySchema,
    ImportancePlotQuerySchema,
    ProfilePlotQuerySchema,
    RecordPlotQuerySchema,
)
from explainers.plots import DPI, FORMATS

blp = Blueprint("plots", __name__, url_prefix="/v1", description="Pictures of explanations")

BINARY = {"schema": {"type": "string", "format": "binary"}}
SIZE_NOTE = ", ".join(f"{kind} {w:g} x {h:g} in" for kind, (w, h) in sizes().items())
DESCRIPTION = (
    f"The picture: image/svg+xml (text kept as text) or image/png at {DPI} DPI. Sizes: {SIZE_NOTE} "
    f"(PNG pixels = inches x {DPI}, SVG points = inches x 72)."
)
IMAGES = {
    "responses": {
        "200": {
            "description": DESCRIPTION,
            "content": {mimetype: BINARY for mimetype in FORMATS.values()},
        }
    }
}
"""Both image types documented (flask-smorest's response decorator names one content type)."""


BERTVIZ_PAGE = (
    "text/html: bertviz's view with bertviz, d3 and jQuery inlined; it loads nothing (its "
    "Content-Security-Policy allows its own scripts by hash and no connection)"
)
BERTVIZ_CSP = (
    "default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'"
)


def _image(data: bytes, fmt: str) -> Response:
    return Response(data, mimetype=FORMATS[fmt])


@blp.route("/explanations/<record_id>/plot")
class RecordPlot(MethodView):
    required_scope = "audit:read"

    @blp.arguments(RecordPlotQuerySchema, location="query")
    @blp.response(200, description=DESCRIPTION, content_type="image/svg+xml")
    @blp.doc(**IMAGES)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any], record_id: str):  # type: ignore[no-untyped-def]
        """One result of a recorded explanation as a picture: SHAP -> waterfall (base value to output, the
        largest attributions, the rest summed); counterfactuals -> before/after table of the changed
        features, least effort first; reasons -> ranked bars; attention -> token x token heatmap
        (``view=head|layer_mean|layer_max|rollout``, ``layer``, ``head``); attributions -> the text with
        each word coloured by its attribution."""
        return _image(candor().plots.record(record_id, query, caller_models()), query["format"])


@blp.route("/explanations/<record_id>/bertviz")
class RecordBertviz(MethodView):
    required_scope = "audit:read"

    @blp.arguments(BertvizQuerySchema, location="query")
    @blp.response(200, description=BERTVIZ_PAGE, content_type="text/html")
    @blp.doc(responses={"200": {"description": BERTVIZ_PAGE, "content": {"text/html": BINARY}}})
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    @blp.alt_response(503, schema=ProblemSchema)
    def get(self, query: dict[str, Any], record_id: str):  # type: ignore[no-untyped-def]
        """One result of a recorded attention explanation (``aggregate`` none, or ``format`` bertviz) in
        bertviz's head or model view: one HTML page with its scripts inlined, which loads nothing."""
        text, sources = candor().plots.bertviz(record_id, query, caller_models())
        response = Response(text, mimetype="text/html")
        response.headers["Content-Security-Policy"] = BERTVIZ_CSP.format(scripts=" ".join(sources))
        return response


@blp.route("/models/<name>/versions/<version>/importance/plot")
class ImportancePlot(MethodView):
    required_scope = "explain"

    @blp.arguments(ImportancePlotQuerySchema, location="query")
    @blp.response(200, description=DESCRIPTION, content_type="image/svg+xml")
    @blp.doc(**IMAGES)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """Global importance as a picture: ``kind=bar`` (mean |SHAP| per feature, as ``/importance``) or
        ``kind=beeswarm`` (each of a fixed sample of reference rows' SHAP value per feature, coloured by
        the feature's value)."""
        picture = candor().plots.importance(name, version, query["kind"], query["format"])
        return _image(picture, query["format"])


@blp.route("/models/<name>/versions/<version>/profile/plot")
class ProfilePlot(MethodView):
    required_scope = "explain"

    @blp.arguments(ProfilePlotQuerySchema, location="query")
    @blp.response(200, description=DESCRIPTION, content_type="image/svg+xml")
    @blp.doc(**IMAGES)
    @blp.alt_response(404, schema=ProblemSchema)
    @blp.alt_response(422, schema=ProblemSchema)
    def get(self, query: dict[str, Any], name: str, version: str):  # type: ignore[no-untyped-def]
        """The reference data's correlations as a heatmap (the matrices of ``/profile``): Pearson or
        Spearman over numeric features, bias-corrected Cramer's V over categorical ones."""
        picture = candor().plots.correlations(name, version, query["method"], query["format"])
        return _image(picture, query["format"])

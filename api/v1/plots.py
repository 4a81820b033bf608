"""Pictures: a recorded explanation as SVG or PNG (``audit:read``, like reading the record), and a version's
global importance as bars or a beeswarm (``explain``)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response
from flask.views import MethodView

from api.context import candor
from api.explain_request import ExplainRequest
from api.jsonio import dumps_bytes
from api.methods.pictures import record_picture, sizes
from api.recording import with_recorded_arrays
from api.schemas.common import ProblemSchema
from api.schemas.plots import (
    BertvizQuerySchema,
    ImportancePlotQuerySchema,
    ProfilePlotQuerySchema,
    RecordPlotQuerySchema,
)
from api.service import ExplanationService
from api.v1.audit import _visible_record
from api.v1.blueprint import Blueprint
from explainers import bertviz_view
from explainers.importance import AGNOSTIC_ROWS
from explainers.narratives import Names
from explainers.plots import DPI, FORMATS, record_result, render
from explainers.shap_backends import BACKGROUND_SEED
from explainers.shap_tabular import ShapExplainer
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

blp = Blueprint("plots", __name__, url_prefix="/v1", description="Pictures of explanations")

BEESWARM_ROWS = 200
"""Reference rows of a beeswarm (AGNOSTIC_ROWS when only a model-agnostic SHAP algorithm applies)."""
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
        record = _with_arrays(_visible_record(record_id))
        picture, data = record_picture(record, query, candor().store.registry)
        return _image(render(picture, query["format"], data), query["format"])


def _with_arrays(record: dict[str, Any]) -> dict[str, Any]:
    """The record with the arrays it keeps as blobs read back in (a picture needs their values)."""
    record["explanation"] = with_recorded_arrays(candor().store.sessions, record.get("explanation"))
    return record


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
        record = _visible_record(record_id)
        if record["kind"] != "attention":
            raise InvalidInput.field("record_id", f"A {record['kind']} record has no attention view.")
        record = _with_arrays(record)
        result = record_result(record, query["instance"])
        view_params = bertviz_view.from_result(result, record["explanation"]["method"]["params"])
        model = f"{record['model']['name']} v{record['model']['version']}"
        title = f"{model}: bertviz {query['view']} view of record {record_id}"
        text, sources = bertviz_view.page(view_params, query["view"], title)
        response = Response(text, mimetype="text/html")
        response.headers["Content-Security-Policy"] = BERTVIZ_CSP.format(scripts=" ".join(sources))
        return response


def _reference_shap(service: ExplanationService, info: VersionInfo) -> tuple[dict[str, Any], list[dict]]:
    """SHAP values (columnar) of a fixed sample of the reference rows, through the service's SHAP path
    (nothing recorded); computed once per loaded version."""
    model = service.store.registry.load(info)

    def compute() -> tuple[dict[str, Any], list[dict]]:
        agnostic = ShapExplainer().backend(model, "auto", None, 100).stochastic
        limit = AGNOSTIC_ROWS if agnostic else BEESWARM_ROWS
        reference = model.reference
        sample = (
            reference if len(reference) <= limit else reference.sample(n=limit, random_state=BACKGROUND_SEED)
        )
        rows = orjson.loads(dumps_bytes(sample.to_dict("records")))
        request = ExplainRequest("shap", info.name, str(info.version), rows, {"layout": "columnar"})
        _, explanation = service.compute(request)
        return orjson.loads(dumps_bytes(explanation.to_dict())), rows

    return model.derived.get_or_load(("plots", "beeswarm"), compute)  # type: ignore[no-any-return]


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
        service = candor().service
        info = service.store.registry.resolve(name, version)
        if info.flavour != "tabular":
            raise InvalidInput.field("method", f"importance does not apply to {info.flavour} models.")
        names = Names(info.manifest)
        if query["kind"] == "bar":
            importance = service.importance(name, version)
            target = _importance_target(info)
            data: dict[str, Any] = {"importance": importance, "names": names, "target": target}
            picture = "importance"
        else:
            envelope, rows = _reference_shap(service, info)
            data, picture = {"envelope": envelope, "rows": rows, "names": names}, "beeswarm"
        return _image(render(picture, query["format"], data), query["format"])


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
        service = candor().service
        profile = service.profile(name, version)
        info = service.store.registry.resolve(name, version)
        data = {
            "profile": profile,
            "names": Names(info.manifest),
            "method": query["method"],
            "title": f"{info.name} v{info.version}",
        }
        return _image(render("correlations", query["format"], data), query["format"])


def _importance_target(info: VersionInfo) -> str | None:
    """The class global importance is measured toward: the favourable class of a binary model (else none:
    the mean over classes, or a regressor's value)."""
    classes = info.manifest.classes or []
    if len(classes) == 2:
        return info.manifest.favourable_class or classes[1]
    return None

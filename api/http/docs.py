"""The published contract (``/v1/openapi.yaml``, ``/v1/openapi.json``) and the Swagger UI page at ``/docs``.

Swagger UI's files come from the installed ``swagger-ui-bundle`` package: no CDN, no network. Swagger UI
renders descriptions as Markdown: the reST double backticks of docstrings are served as single ones.
"""

from __future__ import annotations

from typing import Any

import yaml
from flask import Blueprint, Flask, Response, abort, send_from_directory
from flask_smorest import Api
from swagger_ui_bundle import swagger_ui_path

from api.http.auth import public
from api.http.jsonio import json_response

ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Candor API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/swagger-ui-standalone-preset.js"></script>
<script src="/docs/assets/init.js"></script>
</body></html>
"""
INIT_JS = """window.ui = SwaggerUIBundle({url: "/v1/openapi.json", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout", validatorUrl: null});
"""


API_DESCRIPTION = """Model explanations you can check, as versioned JSON, each one recorded in a \
tamper-evident audit trail. By tag:

- **models**: register a model version (scikit-learn via skops, or a Hugging Face text classifier), list and \
describe models and versions, promote a version to production.
- **explain**: predictions; SHAP attributions per raw feature (tree, linear, permutation, kernel); \
counterfactuals (recourse: the smallest changes that reach the desired outcome); adverse-action reasons with \
reason codes; for text models, attention maps (per head, aggregated, rollout, bertviz) and Captum token \
attributions (integrated gradients); global importance (mean |SHAP| per feature).
- **understanding**: the profile of a version's reference data (summaries, correlations, anomalies) and the \
segments its SHAP attributions form.
- **plots**: SVG or PNG pictures of recorded explanations, of global importance and of the profile.
- **jobs**: batch explanation jobs over an uploaded file or a stored dataset, with progress and results.
- **audit**: the audit trail: list, export, fetch and replay explanation records, verify the hash chain.
- **keys**: API key administration (scopes, model allowlists, rotation, revocation).
- **kserve**: KServe V1 compatibility (`:predict`, `:explain`).
- **oip_server**: KServe's Open Inference Protocol V2 server routes (`/v2`, `/v2/health/live`, \
`/v2/health/ready`).
- **oip_models**: Open Inference Protocol V2 per model: metadata, readiness, `infer` and a SHAP `explain` \
extension, recorded like every explanation.
- **system**: health and readiness probes.
- **metrics**: Prometheus metrics (requests, latencies, explanation and model load times, the job queue).

Send `Authorization: Bearer <key>`; errors are RFC 9457 `application/problem+json` documents naming \
the field."""
"""``info.description`` of the contract: every capability, named by its tag."""


def spec_dict(api: Api) -> dict[str, Any]:
    """The contract as served: descriptions in Markdown (``x`` written `x`)."""
    return _markdown(api.spec.to_dict())  # type: ignore[union-attr]


def _markdown(node: Any, key: str = "") -> Any:
    """Docstrings and schema descriptions use reST's double backticks; Swagger UI (CommonMark) would show
    them literally, so the served text uses single ones."""
    if isinstance(node, dict):
        return {k: _markdown(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_markdown(item, key) for item in node]
    if isinstance(node, str) and key in TEXT_KEYS:
        return node.replace("``", "`")
    return node


TEXT_KEYS = {"description", "summary", "title"}


def spec_yaml(api: Api) -> str:
    return yaml.safe_dump(spec_dict(api), sort_keys=True, allow_unicode=True)


def init_app(app: Flask, api: Api) -> None:
    bp = Blueprint("docs", __name__)

    @bp.get("/v1/openapi.yaml")
    @public
    def openapi_yaml() -> Response:
        return Response(spec_yaml(api), mimetype="application/yaml")

    @bp.get("/v1/openapi.json")
    @public
    def openapi_json() -> Response:
        return json_response(spec_dict(api))

    @bp.get("/docs")
    @public
    def docs_page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @bp.get("/docs/assets/<path:filename>")
    @public
    def docs_asset(filename: str) -> Response:
        if filename == "init.js":
            return Response(INIT_JS, mimetype="text/javascript")
        if filename not in ASSETS:
            abort(404)
        return send_from_directory(swagger_ui_path, filename)

    app.register_blueprint(bp)

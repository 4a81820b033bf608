"""The published contract (``/v1/openapi.yaml``, ``/v1/openapi.json``) and the Swagger UI page at ``/docs``.

Swagger UI's files come from the installed ``swagger-ui-bundle`` package: no CDN, no network.
"""

from __future__ import annotations

from typing import Any

import yaml
from flask import Blueprint, Flask, Response, abort, send_from_directory
from flask_smorest import Api
from swagger_ui_bundle import swagger_ui_path

from api.auth import public
from api.jsonio import json_response

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


def spec_dict(api: Api) -> dict[str, Any]:
    return api.spec.to_dict()  # type: ignore[no-any-return, union-attr]


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

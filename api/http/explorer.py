"""The explorer page at ``/``: static files shipped in the package (no CDN), using the public API with a key
typed into the page. The page itself holds no data, so it needs no key.

``/`` is also KServe V1's server liveness (``GET /`` -> ``{"status": "alive"}``): a client whose ``Accept``
names ``text/html`` (every browser) gets the page, any other client (``*/*``, JSON) the liveness answer."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, abort, request, send_from_directory

from api.http.auth import public
from api.http.jsonio import json_response

STATIC = Path(__file__).with_name("static")
ASSETS = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
PAGE_MIMETYPES = frozenset({"text/html", "application/xhtml+xml"})
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def _served(name: str, mimetype: str) -> Response:
    response = send_from_directory(STATIC, name, mimetype=mimetype, max_age=300)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _wants_page() -> bool:
    """The client names HTML in ``Accept`` (browsers do; KServe's SDK, curl and httpx send ``*/*``)."""
    return any(m in PAGE_MIMETYPES and q > 0 for m, q in request.accept_mimetypes)


def init_app(app: Flask) -> None:
    blueprint = Blueprint("explorer", __name__)

    @blueprint.get("/")
    @public
    def page() -> Response:
        if not _wants_page():
            return json_response({"status": "alive"}, headers={"Vary": "Accept"})
        response = _served("explorer.html", "text/html")
        response.vary.add("Accept")
        return response

    @blueprint.get("/explorer/<name>")
    @public
    def asset(name: str) -> Response:
        if name not in ASSETS:
            abort(404)
        return _served(name, ASSETS[name])

    app.register_blueprint(blueprint)

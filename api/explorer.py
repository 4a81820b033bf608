"""The explorer page at ``/``: static files shipped in the package (no CDN), using the public API with a key
typed into the page. The page itself holds no data, so it needs no key."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Flask, Response, abort, send_from_directory

from api.auth import public

STATIC = Path(__file__).with_name("static")
ASSETS = {"explorer.js": "text/javascript", "explorer.css": "text/css"}
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def _served(name: str, mimetype: str) -> Response:
    response = send_from_directory(STATIC, name, mimetype=mimetype, max_age=300)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    blueprint = Blueprint("explorer", __name__)

    @blueprint.get("/")
    @public
    def page() -> Response:
        return _served("explorer.html", "text/html")

    @blueprint.get("/explorer/<name>")
    @public
    def asset(name: str) -> Response:
        if name not in ASSETS:
            abort(404)
        return _served(name, ASSETS[name])

    app.register_blueprint(blueprint)

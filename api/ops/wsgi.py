"""WSGI entry point for gunicorn: ``api.ops.wsgi:app``."""

from api.http.app import create_app

app = create_app()

"""Candor's HTTP layer: the app factory, settings, auth, errors, schemas, versioned blueprints and the CLI."""

from api.app import create_app

__all__ = ["create_app"]

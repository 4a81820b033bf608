"""Persistence for Candor: models and versions, artifacts on disk, safe loaders and API keys."""

"""Bring a database to the newest schema with Alembic, without an ini file."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine


def upgrade_to_head(engine: Engine) -> None:
    """Run every pending migration; a no-op on a database that is already current."""
    config = Config()
    config.set_main_option("script_location", "model_store:migrations")
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

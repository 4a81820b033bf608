"""Shared fixtures: a real app on a real SQLite file (and PostgreSQL when CANDOR_TEST_POSTGRES_URL is set),
keys for every scope, and the demo models registered through the real registry."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from api.app import create_app
from api.demo import install_demos
from model_store.store import Store

POSTGRES_URL = os.environ.get("CANDOR_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
DATA = Path(__file__).parent / "data"


def _admin_execute(statement: str) -> None:
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(statement))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs on SQLite and, when configured, on PostgreSQL too (a fresh database
    per test, dropped afterwards, so tests never see each other's rows)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'candor.db'}"
        return
    name = "candor_" + uuid.uuid4().hex[:12]
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')  # template1 may be in use
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> Iterator[Store]:
    s = Store(tmp_path / "data", database_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the demo models registered once per session (SQLite); copied per app."""
    root = tmp_path_factory.mktemp("demo")
    s = Store(root, f"sqlite:///{root / 'candor.db'}")
    install_demos(s.registry, names=("loan", "clinical"))
    s.close()
    return root


def _app_over_demo_copy(tmp_path: Path, demo_dir: Path, name: str, **overrides: Any) -> Flask:
    """An app over ``tmp_path / name``, a fresh copy of the demo data dir, with settings ``overrides``."""
    data = tmp_path / name
    shutil.copytree(demo_dir, data)
    return create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}", **overrides})


@pytest.fixture
def app(tmp_path: Path, demo_dir: Path) -> Iterator[Flask]:
    """An app over a private copy of the demo data dir (the demo models are registered and promoted)."""
    application = _app_over_demo_copy(tmp_path, demo_dir, "app-data")
    yield application
    application.extensions["candor"].store.close()


@pytest.fixture
def make_app(tmp_path: Path, demo_dir: Path) -> Iterator[Callable[..., Flask]]:
    """Apps with settings overrides, each over its own copy of the demo data dir."""
    made: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        made.append(_app_over_demo_copy(tmp_path, demo_dir, f"custom-{len(made)}", **overrides))
        return made[-1]

    yield build
    for application in made:
        application.extensions["candor"].store.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def keys(app: Flask) -> dict[str, str]:
    """A token per kind of key: explain, models:write, audit:read, admin."""
    store = app.extensions["candor"].store
    return {
        scope: store.keys.create(f"test-{scope}", [scope])[0]
        for scope in ("explain", "models:write", "audit:read", "admin")
    }


@pytest.fixture
def auth(keys: dict[str, str]) -> dict[str, str]:
    """Headers of a key with the explain scope."""
    return {"Authorization": f"Bearer {keys['explain']}"}


def bearer(token: str) -> dict[str, Any]:
    return {"Authorization": f"Bearer {token}"}

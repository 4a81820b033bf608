"""Shared fixtures: a real app on a real SQLite file (and PostgreSQL when CANDOR_TEST_POSTGRES_URL is set),
keys for every scope, and the demo models registered through the real registry."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from api.demo import install_demos
from api.http.app import create_app
from api.ops.audit_key import create_key
from model_store.store import Store

POSTGRES_URL = os.environ.get("CANDOR_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])
DATA = Path(__file__).parent / "data"


def _admin_execute(statement: str, attempts: int = 5) -> None:
    """Run ``statement`` on the admin connection, retried briefly: DROP ... WITH (FORCE) is refused while
    an autovacuum worker (another role's process) is connected to that database."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(attempts):
            try:
                with admin.connect() as connection:
                    connection.execute(sa.text(statement))
                return
            except sa.exc.ProgrammingError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
    finally:
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
    create_key(root / "audit" / "signing.key")  # as `candor demo install` does: checkpoints are signed
    return root


@pytest.fixture(scope="session")
def demo_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The demo models registered once per session in a PostgreSQL template database (with its own artifact
    dir); each app gets a fresh database created from the template and a copy of the artifacts."""
    if not POSTGRES_URL:
        pytest.skip("CANDOR_TEST_POSTGRES_URL is not set")  # never reached: the backend is not parametrised
    root = tmp_path_factory.mktemp("demo-pg")
    template = "candor_demo_" + uuid.uuid4().hex[:12]
    _admin_execute(f'CREATE DATABASE "{template}" TEMPLATE template0')
    s = Store(root, _database(template))
    install_demos(s.registry, names=("loan", "clinical"))
    s.close()
    create_key(root / "audit" / "signing.key")
    yield root, template
    _admin_execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database (dropped afterwards), for what only PostgreSQL does: several hosts."""
    if not POSTGRES_URL:
        pytest.fail("CANDOR_TEST_POSTGRES_URL is not set: several hosts need PostgreSQL (.ci/run starts it)")
    name = "candor_" + uuid.uuid4().hex[:12]
    _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    yield _database(name)
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database(name: str) -> str:
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


class AppFactory:
    """Apps over a private copy of the demo data (SQLite file, or a PostgreSQL database from the template),
    with settings overrides; closes what it made."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
        self.request, self.tmp_path, self.backend = request, tmp_path, backend
        self.made: list[Flask] = []
        self.databases: list[str] = []

    def build(self, **overrides: Any) -> Flask:
        data = self.tmp_path / f"app-{len(self.made)}"
        if self.backend == "sqlite":
            shutil.copytree(self.request.getfixturevalue("demo_dir"), data)
            url = f"sqlite:///{data / 'candor.db'}"
        else:
            root, template = self.request.getfixturevalue("demo_postgres")
            shutil.copytree(root, data)
            name = "candor_" + uuid.uuid4().hex[:12]
            _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            self.databases.append(name)
            url = _database(name)
        self.made.append(create_app({"data_dir": data, "database_url": url, **overrides}))
        return self.made[-1]

    def close(self) -> None:
        for application in self.made:
            application.extensions["candor"].store.close()
        for name in self.databases:
            _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def app_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AppFactory]:
    """Every API test runs on SQLite and, when CANDOR_TEST_POSTGRES_URL is set, on PostgreSQL too."""
    factory = AppFactory(request, tmp_path, request.param)
    yield factory
    factory.close()


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    """An app over a private copy of the demo data (the demo models are registered and promoted)."""
    return app_factory.build()


@pytest.fixture
def make_app(app_factory: AppFactory) -> Callable[..., Flask]:
    """Apps with settings overrides, each over its own copy of the demo data (same backend as ``app``)."""
    return app_factory.build


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

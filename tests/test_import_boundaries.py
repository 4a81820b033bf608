"""The service, a Dask worker's job modules and the method modules import no Flask (nor flask-smorest or
werkzeug): each is imported in a fresh interpreter and ``sys.modules`` is read after it. The contracts in
pyproject.toml (``lint-imports``) state the same statically; this test checks what really loads, including
package ``__init__`` modules and imports made at import time."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("flask", "flask_smorest", "werkzeug")
WORKER_MODULES = ("api.service.explanations", "api.jobs.compute", "api.jobs.runner", "api.jobs.submit")
"""What the job runner and a Dask worker load (the task is ``api.jobs.compute``), and job submission."""

PROBE = """
import importlib, json, sys
forbidden = set(sys.argv[1].split(","))
found = {}
for name in sys.argv[2:]:
    importlib.import_module(name)
    found[name] = sorted(m for m in sys.modules if m.split(".")[0] in forbidden)
print(json.dumps(found))
"""


def method_modules() -> list[str]:
    """Every module of ``api/methods`` (read from the folder, so a new method is covered unasked)."""
    folder = ROOT / "api" / "methods"
    return sorted(f"api.methods.{info.name}" for info in pkgutil.iter_modules([str(folder)]))


def loaded_after(modules: list[str]) -> dict[str, list[str]]:
    """For each module imported in turn in a fresh interpreter, the forbidden modules loaded by then."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN), *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_every_method_module_is_listed() -> None:
    assert len(method_modules()) >= 5
    assert "api.methods.shap" in method_modules()


def test_service_worker_and_methods_import_no_flask() -> None:
    modules = [*WORKER_MODULES, *method_modules()]
    found = loaded_after(modules)
    assert list(found) == modules
    assert {name: loaded for name, loaded in found.items() if loaded} == {}


@pytest.mark.parametrize("module", ["api.http.v1.metrics", "api.http.schemas.uploads"])
def test_the_probe_sees_flask_where_it_is(module: str) -> None:
    """The probe is not blind: the metrics view and the upload fields do load Flask."""
    found = loaded_after([module])
    assert set(FORBIDDEN) <= set(found[module])


def test_views_reach_the_store_only_through_the_service() -> None:
    """No view module touches the app's store (``candor().store``): the contracts keep store modules out of
    their imports, this keeps the store object out of their code."""
    import ast

    views = sorted((ROOT / "api" / "http" / "v1").glob("*.py")) + sorted(
        (ROOT / "api" / "http" / "v2").glob("*.py")
    )
    assert len(views) > 10
    reaching = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in views
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in ("store", "sessions", "registry")
    ]
    assert reaching == []

"""schemathesis against the served OpenAPI document and a real gunicorn: every operation, positive and
negative data, the examples, coverage, fuzzing and stateful phases (following the document's links), with the
checks the contract promises. Zero failures, or the test fails with schemathesis' report.

The contract's request examples and the hooks of ``schemathesis_hooks`` (the demo models' names and reference
rows in most positive cases) make the compute routes do real work: the test counts the explanation records of
every method and the jobs the run left behind. The server's caps are set low so that this stays quick.

The seed is fixed (``CANDOR_FUZZ_SEED``) so a CI run is reproducible; set another to explore."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from gunicorn_process import free_port, running_gunicorn, server_env
from text_oracles import tiny_bert_dir
from tiny_text import tiny_manifest

from api.methods.registry import NAMES
from model_store.manifest import parse_manifest
from model_store.store import Store
from model_store.tables import JobRow, RecordRow
from model_store.text.files import read_directory

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "negative_data_rejection,ignored_auth,unsupported_method"
)
EXAMPLES = int(os.environ.get("CANDOR_FUZZ_EXAMPLES", "20"))
SEED = os.environ.get("CANDOR_FUZZ_SEED", "20261125")
pytestmark = pytest.mark.e2e
CAPS = {
    "CANDOR_MAX_FAIRNESS_RESAMPLES": "20",
    "CANDOR_MAX_INSTANCES": "4",
    "CANDOR_MAX_CF_INSTANCES": "2",
    "CANDOR_MAX_TEXT_INSTANCES": "2",
    "CANDOR_MAX_CF_BUDGET_MS": "500",
    "CANDOR_MAX_SHAP_EVALS": "128",
    "CANDOR_MAX_BACKGROUND_ROWS": "20",
    "CANDOR_MAX_EFFECTS_GRID": "10",
    "CANDOR_MAX_EFFECTS_SAMPLE": "20",
    "CANDOR_MAX_EFFECTS_EVALUATIONS": "2000",
}
"""Caps that keep every request the fuzzer can make cheap (the contract publishes them as maxItems)."""
OPTION_CAPS = {
    "budget_ms": 500,
    "max_evals": 128,
    "background_rows": 20,
    "grid_resolution": 10,
    "sample": 20,
    "resamples": 20,
}
"""The same caps as options: the hooks keep most real requests within them."""
METHODS = NAMES
TEXTS = ["Chest pain since this morning.", "Routine follow-up, no complaints.", "Fever and cough for 3 days."]


def fuzz_rows(store: Store, path: Path) -> Path:
    """The pool the hooks draw from: each tabular demo's reference rows and mutable features, and texts."""
    tabular = {}
    for name in ("loan", "clinical"):
        model = store.registry.load(store.registry.resolve(name, "production"))
        rows = json.loads(model.reference.head(50).to_json(orient="records"))
        mutable = [f.name for f in model.manifest.features if f.mutable and not f.protected]
        tabular[name] = {"rows": rows, "mutable": mutable}
    pool = {"tabular": tabular, "text_model": "notes", "texts": TEXTS, "caps": OPTION_CAPS}
    path.write_text(json.dumps(pool))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[tuple[str, str, Path, Path]]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(demo_dir, data)
    store = Store(data, f"sqlite:///{data / 'candor.db'}")
    store.registry.register_text(
        parse_manifest(tiny_manifest("notes")), read_directory(tiny_bert_dir(tmp_path_factory), 200, 10**9)
    )
    store.registry.promote("notes", 1)
    token, _ = store.keys.create("fuzzer", ["admin"])
    rows = fuzz_rows(store, data.parent / "rows.json")
    store.close()
    env = server_env(
        data, free_port(), CANDOR_WORKERS="2", CANDOR_RATE_LIMIT="", CANDOR_LOG_LEVEL="warning", **CAPS
    )
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:
        yield gunicorn.base, token, gunicorn.log, rows


def counts(data: Path) -> tuple[dict[str, int], int]:
    """Explanation records per kind, and jobs, in the served database."""
    engine = sa.create_engine(f"sqlite:///{data / 'candor.db'}")
    with engine.connect() as connection:
        kinds = connection.execute(sa.select(RecordRow.kind, sa.func.count()).group_by(RecordRow.kind)).all()
        jobs = connection.execute(sa.select(sa.func.count()).select_from(JobRow)).scalar_one()
    engine.dispose()
    return {kind: int(n) for kind, n in kinds}, int(jobs)


def test_the_served_contract_holds_under_fuzzing(served: tuple[str, str, Path, Path], tmp_path: Path) -> None:
    base, token, log, rows = served
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "run",
        f"{base}/v1/openapi.yaml",
        "--url",
        base,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",  # hypothesis' lambda descriptions are not thread-safe on Python 3.11 (SystemError from ast)
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "CANDOR_FUZZ_ROWS": str(rows),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path, env=env)
    print(f"schemathesis took {time.monotonic() - started:.0f} s")
    (tmp_path / "schemathesis.txt").write_text(done.stdout)
    report = "\n".join(line[:500] for line in done.stdout.splitlines())[-15000:]
    assert done.returncode == 0, f"{report}\n--- server log ---\n{log.read_text()[-3000:]}"
    operations = len(
        [
            m
            for ops in requests.get(f"{base}/v1/openapi.json").json()["paths"].values()
            for m in ops
            if m != "parameters"
        ]
    )
    assert f"Selected: {operations}/{operations}" in done.stdout and f"Tested: {operations}" in done.stdout, (
        report
    )
    records, jobs = counts(rows.parent / "data")
    print(f"records per kind: {records}, jobs: {jobs}")
    assert [method for method in METHODS if records.get(method, 0) < 1] == [], records
    assert jobs >= 3

"""schemathesis against the served OpenAPI document and a real gunicorn: every operation, positive and
negative data, the examples, coverage, fuzzing and stateful phases (following the document's links), with the
checks the contract promises. Zero failures, or the test fails with schemathesis' report.

The seed is fixed (``CANDOR_FUZZ_SEED``) so a CI run is reproducible; set another to explore."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from gunicorn_process import free_port, running_gunicorn, server_env
from text_oracles import tiny_bert_dir
from tiny_text import tiny_manifest

from model_store.manifest import parse_manifest
from model_store.store import Store
from model_store.text.files import read_directory

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
    "negative_data_rejection,ignored_auth,unsupported_method"
)
EXAMPLES = int(os.environ.get("CANDOR_FUZZ_EXAMPLES", "100"))
SEED = os.environ.get("CANDOR_FUZZ_SEED", "20261125")
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[str, str, Path]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(demo_dir, data)
    store = Store(data, f"sqlite:///{data / 'candor.db'}")
    store.registry.register_text(
        parse_manifest(tiny_manifest()), read_directory(tiny_bert_dir(tmp_path_factory), 200, 10**9)
    )
    token, _ = store.keys.create("fuzzer", ["admin"])
    store.close()
    env = server_env(data, free_port(), CANDOR_WORKERS="2", CANDOR_RATE_LIMIT="", CANDOR_LOG_LEVEL="warning")
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:
        yield gunicorn.base, token, gunicorn.log


def test_the_served_contract_holds_under_fuzzing(served: tuple[str, str, Path], tmp_path: Path) -> None:
    base, token, log = served
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
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    report = done.stdout[-15000:]
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

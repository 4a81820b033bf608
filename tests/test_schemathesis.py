"""schemathesis against the served OpenAPI document and a real gunicorn: every operation, positive and
negative data, the examples, coverage, fuzzing and stateful phases (following the document's links), with the
checks the contract promises. Zero failures, or the test fails with schemathesis' report.

The seed is fixed (``CANDOR_FUZZ_SEED``) so a CI run is reproducible; set another to explore."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from text_oracles import tiny_bert_dir
from tiny_text import tiny_manifest

from model_store.manifest import parse_manifest
from model_store.store import Store
from model_store.text.files import read_directory

ROOT = Path(__file__).resolve().parents[1]
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env.update(
        CANDOR_DATA_DIR=str(data),
        CANDOR_BIND=f"127.0.0.1:{port}",
        CANDOR_WORKERS="2",
        CANDOR_RATE_LIMIT="",
        CANDOR_LOG_LEVEL="warning",
        GUNICORN_CMD_ARGS="--no-control-socket",
    )
    log = data / "gunicorn.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn_conf.py"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(base + "/v1/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.3)
        yield base, token, log
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


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

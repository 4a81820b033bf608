"""Real predictors on loopback for the remote-model tests and bench: MLServer 1.7.1 with its scikit-learn
runtime (from .venv-mlserver, made by tests/mlserver_env.sh) and the stdlib servers of
tests/predictor_stub.py.
A missing .venv-mlserver fails the test with what to run (it is never skipped)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("CANDOR_TEST_MLSERVER_VENV", ROOT / ".venv-mlserver"))
STUB = Path(__file__).with_name("predictor_stub.py")
STARTUP_TIMEOUT = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mlserver_venv() -> Path:
    if not (VENV / "bin" / "mlserver").exists():
        pytest.fail(
            f"MLServer is not installed in {VENV}: run `bash tests/mlserver_env.sh` (make test does) to "
            "create it (MLServer 1.7.1 + mlserver-sklearn, pinned in tests/mlserver-constraints.txt).",
            pytrace=False,
        )
    return VENV


def write_mlserver_dir(directory: Path, models: dict[str, Any]) -> tuple[int, int]:
    """MLServer's settings and one sub-directory per model (its joblib file, for MLServer only)."""
    http_port, grpc_port = free_port(), free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "debug": False,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.json").write_text(json.dumps(settings))
    for name, estimator in models.items():
        folder = directory / name
        folder.mkdir()
        joblib.dump(estimator, folder / "model.joblib")
        model_settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib"},
        }
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
    return http_port, grpc_port


@contextlib.contextmanager
def running_mlserver(directory: Path, models: dict[str, Any]) -> Iterator[str]:
    """``mlserver start`` on loopback serving ``models``; yields its base URL once every model is ready."""
    venv = mlserver_venv()
    port, _ = write_mlserver_dir(directory, models)
    log = directory / "mlserver.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDOR_", "MLSERVER_", "PYTHON"))}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(venv / "bin" / "mlserver"), "start", str(directory)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            _wait(base + "/v2/health/ready", process, log, [f"/v2/models/{n}/ready" for n in models])
            yield base
        finally:
            _stop(process)


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, models: list[str]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    base = url.rsplit("/v2/", 1)[0]
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the predictor exited:\n{log.read_text(errors='replace')[-3000:]}", pytrace=False)
        try:
            if requests.get(url, timeout=1).ok and all(requests.get(base + m, timeout=1).ok for m in models):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(
        f"the predictor did not become ready:\n{log.read_text(errors='replace')[-3000:]}", pytrace=False
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)


@contextlib.contextmanager
def running_stub(mode: str, model_file: Path | None = None) -> Iterator[str]:
    """tests/predictor_stub.py in ``mode`` on a free loopback port (``v1`` runs in .venv-mlserver's Python,
    which has scikit-learn and joblib to load ``model_file``); yields its base URL."""
    port = free_port()
    python = str(mlserver_venv() / "bin" / "python") if mode == "v1" else sys.executable
    args = [python, str(STUB), str(port), mode] + ([str(model_file)] if model_file is not None else [])
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != b"ready":
            pytest.fail(f"the {mode} predictor stub did not start", pytrace=False)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def posts(base: str) -> int:
    """How many POSTs a stub received."""
    return int(requests.get(base + "/count", timeout=5).json()["posts"])

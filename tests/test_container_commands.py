"""The Dockerfile's own commands, run outside a container (there is no Docker engine here): its CMD serves
the API with the image's environment, and its HEALTHCHECK command passes against it. The image's promises
(non-root user, data volume, bind inside the container only) are read from the file."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
pytestmark = pytest.mark.e2e


def instruction(name: str) -> str:
    """The last ``name`` instruction of the runtime stage, continuation lines joined."""
    runtime = DOCKERFILE.split(" AS runtime", 1)[1]
    joined = re.sub(r"\\\n\s*", " ", runtime)
    found = [line[len(name) :].strip() for line in joined.splitlines() if line.startswith(name + " ")]
    assert found, f"no {name} in the runtime stage"
    return found[-1]


def image_environment() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", instruction("ENV")))


def test_the_image_promises() -> None:
    assert instruction("USER").split(":")[0] != "0" and instruction("USER")[0].isdigit()
    assert instruction("VOLUME") == "/data"
    env = image_environment()
    assert env["CANDOR_DATA_DIR"] == "/data"
    assert env["CANDOR_BIND"] == "0.0.0.0:8000", "inside the container only"
    assert (
        "FROM python:3.11-slim AS builder" in DOCKERFILE
        and "--index-url https://download.pytorch.org/whl/cpu" in DOCKERFILE
    )
    from api.settings import Settings

    assert Settings().bind.startswith("127.0.0.1:"), "everywhere else the default is loopback"


def test_cmd_serves_and_the_healthcheck_passes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = json.loads(instruction("CMD"))
    health = json.loads(instruction("HEALTHCHECK").split(" CMD ", 1)[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDOR_")}
    env.update(image_environment())
    # The image's values, except where this host differs: a private data dir and a free loopback port.
    env.update(CANDOR_DATA_DIR=str(tmp_path), CANDOR_BIND=f"127.0.0.1:{port}", CANDOR_WORKERS="1")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    assert cmd[0] == "candor"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        probe = [sys.executable if part == "python" else part.replace(":8000", f":{port}") for part in health]
        deadline = time.monotonic() + 60
        while True:
            done = subprocess.run(probe, capture_output=True, timeout=10)
            if done.returncode == 0:
                break
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.5)
        assert (tmp_path / "candor.db").exists(), "the data dir holds the database"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    assert subprocess.run(probe, capture_output=True, timeout=10).returncode != 0, "the probe can fail"

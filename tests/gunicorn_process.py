"""The real gunicorn for end-to-end tests: the project's config (``api/ops/gunicorn_conf.py``) on a free
loopback port, in its own session, stopped with SIGTERM (SIGKILL to its process group if it lingers)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Gunicorn:
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(data: Path, port: int, **settings: str) -> dict[str, str]:
    """This process's environment without any ``CANDOR_``/``PROMETHEUS_`` variable, plus the data dir, the
    bind address and ``settings`` (e.g. ``CANDOR_WORKERS="2"``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CANDOR_", "PROMETHEUS_"))}
    env.update(
        CANDOR_DATA_DIR=str(data),
        CANDOR_BIND=f"127.0.0.1:{port}",
        # gunicorn 27 opens a control socket in ~/.gunicorn by default; keep the tests self-contained.
        GUNICORN_CMD_ARGS="--no-control-socket",
    )
    env.update(settings)
    return env


@contextlib.contextmanager
def running_gunicorn(
    env: dict[str, str], log: Path, ready: Callable[[Gunicorn], bool] | None = None
) -> Iterator[Gunicorn]:
    """gunicorn serving ``env``'s data dir, once ``/v1/health`` answers 200 (and ``ready`` holds)."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "api/ops/gunicorn_conf.py"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Gunicorn(f"http://{env['CANDOR_BIND']}", process, log)
    try:
        _wait(server, ready)
        yield server
    finally:
        _stop(process)


def _healthy(server: Gunicorn) -> bool:
    try:
        return requests.get(server.base + "/v1/health", timeout=2).status_code == 200
    except (requests.ConnectionError, requests.Timeout):  # a worker still booting on a busy machine
        return False


def _wait(server: Gunicorn, ready: Callable[[Gunicorn], bool] | None) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.process.returncode}:\n{server.log_tail()}")
        if _healthy(server) and (ready is None or ready(server)):
            return
        time.sleep(0.2)
    pytest.fail(f"gunicorn was not ready within {STARTUP_TIMEOUT:.0f} s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the group of the gunicorn we started (own session)
        process.wait(timeout=10)

"""What every benchmark here shares: a real gunicorn over a throw-away data dir with the demo models and an
``explain`` key, and timing one call with the benchmark process's garbage collector paused."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model_store.store import Store  # noqa: E402


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """Wall time of one call with the benchmark process's garbage collector paused (as timeit does)."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        result = fn(*args)
        return time.perf_counter() - started, result
    finally:
        gc.enable()


class BenchServer:
    """``candor demo install`` into ``data_dir``, an ``explain`` key, then gunicorn (1 worker, 1 thread) with
    the project's config on a free loopback port, and one keep-alive session.

    Options (defaults as above): ``scopes`` of the key; ``database_url`` (e.g. a PostgreSQL database; default
    SQLite in the data dir); ``demos``: register only these demo models, in this process (faster than the
    CLI, which also fine-tunes ``notes``). ``extra_env`` overrides the server's CANDOR_* variables (e.g.
    ``CANDOR_WORKERS``). ``master_pid`` and ``worker_pids()`` expose gunicorn's processes."""

    def __init__(
        self,
        data_dir: Path,
        extra_env: dict[str, str] | None = None,
        *,
        scopes: tuple[str, ...] = ("explain",),
        database_url: str | None = None,
        demos: tuple[str, ...] | None = None,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.database_url = database_url or f"sqlite:///{data_dir / 'candor.db'}"
        env = {
            **os.environ,
            "CANDOR_DATA_DIR": str(data_dir),
            "CANDOR_BIND": f"127.0.0.1:{port}",
            "CANDOR_WORKERS": "1",
            "CANDOR_THREADS": "1",
            "CANDOR_LOG_LEVEL": "warning",
            **(extra_env or {}),
        }
        env.pop("CANDOR_DATABASE_URL", None)
        if database_url:
            env["CANDOR_DATABASE_URL"] = database_url
        started = time.monotonic()
        if demos is None:
            subprocess.run(
                [sys.executable, "-m", "api.ops.cli", "demo", "install"], env=env, check=True, cwd=ROOT
            )
            store = Store(data_dir, self.database_url)
        else:
            from api.demo import install_demos

            store = Store(data_dir, self.database_url)
            install_demos(store.registry, names=demos)
        self.install_seconds = time.monotonic() - started
        self.token = store.keys.create("bench", list(scopes))[0]
        store.close()
        self.log = (data_dir / "gunicorn.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "api/ops/gunicorn_conf.py",
                "--access-logfile",
                "/dev/null",
            ],
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        )
        self.last_bytes = 0
        self.last_decode_s = 0.0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.session.get(self.base + "/v1/health", timeout=1).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):  # workers still booting
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("gunicorn did not become healthy")

    def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        """POST ``body`` as JSON and decode the answer (timed into ``last_decode_s``)."""
        response = self.session.post(self.base + path, data=orjson.dumps(body), headers=headers)
        self.last_headers = response.headers
        if not response.ok:
            raise RuntimeError(f"{response.status_code} from the API: {response.text[:2000]}")
        started = time.perf_counter()
        answer = orjson.loads(response.content)
        self.last_decode_s = time.perf_counter() - started
        self.last_bytes = len(response.content)
        return answer  # type: ignore[no-any-return]

    @property
    def master_pid(self) -> int:
        """The gunicorn master (the process this object started)."""
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        """The master's live children (its workers), from ``/proc``; zombies not yet reaped are left out."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            if fields[0] != "Z" and int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def stop(self) -> None:
        self.session.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

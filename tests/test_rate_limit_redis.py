"""Rate-limit counters in a real Redis (a private redis-server per test): limiters and apps that share it
share each key's count, as gunicorn workers and hosts do; a Redis that does not answer is a 503 problem."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import bearer
from flask import Flask
from test_api_auth import assert_problem

from api.http.app import create_app
from api.http.rate_limit import KeyRateLimiter

REDIS_SERVER = Path("/usr/bin/redis-server")
READY_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server (no persistence) on a free port, stopped after the test."""
    if not REDIS_SERVER.is_file():
        pytest.fail(f"{REDIS_SERVER} is missing: install Debian's redis-server package (.ci/run does)")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    port = _free_port()
    command = [str(REDIS_SERVER), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(workdir), "--logfile", str(workdir / "redis.log")]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}"
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            if process.poll() is not None:
                log = (workdir / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server exited with status {process.returncode}:\n{log}")
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not answer PING on port {port} within {READY_SECONDS} s")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def second_worker() -> Iterator[Callable[[Flask], Flask]]:
    """Another app over the same data dir and database as a given one (a second gunicorn worker)."""
    made: list[Flask] = []

    def build(first: Flask) -> Flask:
        settings = first.extensions["candor"].settings
        overrides = {"data_dir": settings.data_dir, "database_url": settings.resolved_database_url}
        overrides |= {"rate_limit": settings.rate_limit, "rate_limit_storage": settings.rate_limit_storage}
        made.append(create_app(overrides))
        return made[-1]

    yield build
    for application in made:
        application.extensions["candor"].store.close()


def test_two_limiters_on_one_redis_share_each_keys_count(redis_url: str) -> None:
    first, second = KeyRateLimiter("3/minute", redis_url), KeyRateLimiter("3/minute", redis_url)
    assert [first.retry_after("busy"), second.retry_after("busy"), first.retry_after("busy")] == [None] * 3
    for limiter in (second, first):
        wait = limiter.retry_after("busy")
        assert wait is not None and 1 <= wait <= 60
    assert first.retry_after("quiet") is None
    assert second.retry_after("quiet") is None


def test_apps_on_one_redis_share_each_keys_count(
    make_app: Callable[..., Flask],
    second_worker: Callable[[Flask], Flask],
    redis_url: str,
    redis_client: redis.Redis,
) -> None:
    first = make_app(rate_limit="3/minute", rate_limit_storage=redis_url)
    second = second_worker(first)
    keys = first.extensions["candor"].store.keys
    (busy, principal), quiet = keys.create("busy", ["explain"]), keys.create("quiet", ["explain"])[0]
    clients = [first.test_client(), second.test_client()]
    statuses = [clients[i % 2].get("/v1/models", headers=bearer(busy)).status_code for i in range(3)]
    assert statuses == [200] * 3
    limited = clients[1].get("/v1/models", headers=bearer(busy))
    body = assert_problem(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "too many" in body["detail"].lower()
    assert clients[0].get("/v1/models", headers=bearer(busy)).status_code == 429
    assert clients[1].get("/v1/models", headers=bearer(quiet)).status_code == 200

    stored = redis_client.keys("*")
    assert stored and all(name.startswith("LIMITS") for name in stored), stored
    assert any(principal.key_id in name for name in stored), stored
    redis_client.flushall()  # the count lived in Redis only: once it is gone, the key may call again
    assert clients[0].get("/v1/models", headers=bearer(busy)).status_code == 200


@pytest.fixture(params=["refused", "silent"])
def dead_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis address where nothing listens, or where a socket accepts connections but never answers."""
    if request.param == "refused":
        yield f"redis://127.0.0.1:{_free_port()}"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        yield f"redis://127.0.0.1:{silent.getsockname()[1]}"


def test_an_unreachable_redis_answers_503_and_is_logged(
    make_app: Callable[..., Flask], dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(rate_limit="3/minute", rate_limit_storage=dead_redis_url)  # startup does not need Redis
    token = app.extensions["candor"].store.keys.create("caller", ["explain"])[0]
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="candor.errors"):
        started = time.monotonic()
        response = client.get("/v1/models", headers=bearer(token))
        elapsed = time.monotonic() - started
    body = assert_problem(response, 503)
    assert body["type"].endswith("/rate-limit-unavailable")
    assert "rate-limit" in body["detail"] and "unavailable" in body["detail"]
    assert "redis" not in response.get_data(as_text=True).lower(), "no library text reaches the client"
    assert elapsed < 5, f"a Redis that does not answer held the request for {elapsed:.1f} s"
    logged = [r for r in caplog.records if "RateLimitUnavailable" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, caplog.text
    assert isinstance(logged[0].exc_info[1], redis.RedisError)
    assert client.get("/v1/health").status_code == 200  # probes are not limited

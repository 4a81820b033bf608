"""Fixtures and helpers of the remote-model tests (tests/test_remote_model.py, tests/test_remote_faults.py):
the tiny scikit-learn Pipeline (and a regressor on its preprocessing) served by a real MLServer 1.7.1 and by
the stdlib KServe V1 server of tests/predictor_stub.py, on loopback, once per test module."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask.testing import FlaskClient
from predictor_servers import running_mlserver, running_stub
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.pipeline import Pipeline
from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

from model_store.reference import to_parquet

PROBLEM = "application/problem+json"
FEATURES = ["size", "colour", "weight"]
REMOTE_NAME = "tiny-sklearn"


@pytest.fixture(scope="module", name="fitted")
def fitted_fixture() -> tuple[pd.DataFrame, Pipeline]:
    frame = tiny_frame(200)
    return frame, tiny_pipeline(frame)


@pytest.fixture(scope="module", name="regressor")
def regressor_fixture(fitted: tuple[pd.DataFrame, Pipeline]) -> Pipeline:
    """The tiny Pipeline's preprocessing with a regressor of size * weight / 10 (a float target)."""
    frame = fitted[0]
    model = Pipeline(
        [("prep", clone(fitted[1].steps[0][1])), ("model", GradientBoostingRegressor(random_state=0))]
    )
    return model.fit(frame[FEATURES], frame["size"] * frame["weight"] / 10)


@pytest.fixture(scope="module", name="mlserver")
def mlserver_fixture(
    tmp_path_factory: pytest.TempPathFactory, fitted: tuple[pd.DataFrame, Pipeline], regressor: Pipeline
) -> Iterator[str]:
    models = {REMOTE_NAME: fitted[1], "tiny-regressor": regressor}
    with running_mlserver(tmp_path_factory.mktemp("mlserver"), models) as base:
        yield base


@pytest.fixture(scope="module", name="v1_server")
def v1_server_fixture(
    tmp_path_factory: pytest.TempPathFactory, fitted: tuple[pd.DataFrame, Pipeline]
) -> Iterator[str]:
    import joblib

    path = tmp_path_factory.mktemp("v1") / "model.joblib"
    joblib.dump(fitted[1], path)
    with running_stub("v1", path) as base:
        yield base


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def remote_manifest(name: str, protocol: str = "v2", endpoint: str = "TINY") -> dict[str, Any]:
    manifest = tiny_manifest(name)
    manifest["features"][1]["categories"] = ["blue", "green", "red"]
    manifest["format"] = "remote"
    manifest["predictor"] = {"protocol": protocol, "model": REMOTE_NAME, "endpoint": endpoint}
    return manifest


def register(
    client: FlaskClient,
    token: str,
    manifest: dict[str, Any],
    frame: pd.DataFrame,
    artifact: bytes | None = None,
) -> Any:
    data: dict[str, Any] = {
        "manifest": json.dumps(manifest),
        "reference": (io.BytesIO(to_parquet(frame[FEATURES])), "reference.parquet"),
    }
    if artifact is not None:
        data["artifact"] = (io.BytesIO(artifact), "model.skops")
    return client.post(
        f"/v1/models/{manifest['name']}/versions",
        data=data,
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def rows(frame: pd.DataFrame, n: int, start: int = 0) -> list[dict[str, Any]]:
    return json.loads(frame[FEATURES].iloc[start : start + n].to_json(orient="records"))


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.get_data(as_text=True)
    return response.get_json()


def proba_of(predictions: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[p["probabilities"]["no"], p["probabilities"]["yes"]] for p in predictions])


def without_ood(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in result.items() if k != "ood"} for result in results]


def assert_close(got: Any, expected: Any, path: str = "results") -> None:
    """The same JSON structure, numbers within 1e-9 (floating summation order), everything else equal."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), path
        for key in expected:
            assert_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_close(a, b, f"{path}.{index}")
    elif isinstance(expected, float) and not isinstance(expected, bool):
        assert got == pytest.approx(expected, rel=0, abs=1e-9), path
    else:
        assert got == expected, path

"""End to end with the real KServe SDK (V1 and V2 ``InferenceRESTClient``) against the real gunicorn.

The SDK's pins clash with Candor's (pandas<3, python-dateutil<3, psutil<6), so it lives in its own venv:
``$CANDOR_TEST_KSERVE_VENV`` (default ``.venv-kserve`` in the checkout), created on first use from
``tests/kserve_client/requirements.txt``. ``tests/kserve_client/drive.py`` runs there and reports what the SDK
returned; this test checks it against Candor's own API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gunicorn_process import ROOT, free_port, running_gunicorn, server_env

from model_store.store import Store

pytestmark = pytest.mark.e2e

CLIENT = ROOT / "tests" / "kserve_client"
LOAN_ROW: dict[str, Any] = json.loads((ROOT / "tests" / "data" / "loan_shap_request.json").read_text())[
    "instances"
][0]


def kserve_python() -> Path:
    """The KServe venv's interpreter, installing the pinned SDK there unless it imports already."""
    venv = Path(os.environ.get("CANDOR_TEST_KSERVE_VENV", ROOT / ".venv-kserve"))
    python = venv / "bin" / "python"
    if (
        python.exists()
        and subprocess.run([python, "-c", "import kserve"], capture_output=True).returncode == 0
    ):
        return python
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    install = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"]
    done = subprocess.run(
        [*install, CLIENT / "requirements.txt"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[dict[str, Any]]:
    """What the SDK returned, V1 and V2, from a gunicorn serving the demo models, plus the server's base."""
    python = kserve_python()
    data = tmp_path_factory.mktemp("kserve") / "data"
    shutil.copytree(demo_dir, data)
    store = Store(data, f"sqlite:///{data / 'candor.db'}")
    token, _ = store.keys.create("kserve-e2e", ["explain", "audit:read"])
    order = store.registry.resolve("loan", "production").manifest.feature_names
    store.close()
    env = server_env(data, free_port(), CANDOR_WORKERS="2", CANDOR_LOG_LEVEL="warning")
    with running_gunicorn(env, data / "gunicorn.log") as gunicorn:
        job = json.dumps({"base": gunicorn.base, "token": token, "row": LOAN_ROW, "order": order})
        done = subprocess.run(
            [python, CLIENT / "drive.py"], input=job, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{done.stderr[-5000:]}\n--- server ---\n{gunicorn.log_tail()}"
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        yield {**json.loads(done.stdout), "base": gunicorn.base, "http": http}


def v1_predict(report: dict[str, Any]) -> dict[str, Any]:
    url = report["base"] + "/v1/models/loan/versions/1/predict"
    response = report["http"].post(url, json={"instances": [LOAN_ROW]}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]  # type: ignore[no-any-return]


def test_v1_probes_and_verbs(report: dict[str, Any]) -> None:
    v1 = report["v1"]
    assert v1["server_live"] is True and v1["model_ready"] is True
    expected = v1_predict(report)
    assert v1["predict"]["predictions"] == [expected["label"]]
    assert v1["predict"]["probabilities"] == [expected["probabilities"]]
    record = report["http"].get(f"{report['base']}/v1/explanations/{v1['explain']['id']}", timeout=60)
    assert record.status_code == 200 and record.json()["kind"] == "shap"


def test_v1_errors_reach_the_sdk_with_their_message(report: dict[str, Any]) -> None:
    error = report["v1"]["error"]
    assert error.startswith("Some instances do not match") and "instances.0.purpose" in error, error
    assert "422 UNPROCESSABLE" in error.upper()
    assert "404 NOT FOUND" in report["v1"]["unknown_model_error"].upper()  # Candor's resource: problem+json


def test_v2_probes(report: dict[str, Any]) -> None:
    v2 = report["v2"]
    assert v2["server_live"] is True and v2["server_ready"] is True
    assert v2["model_ready"] is True and v2["unknown_model_ready"] is False


def test_v2_infer_in_both_layouts_matches_v1(report: dict[str, Any]) -> None:
    v2, expected = report["v2"], v1_predict(report)
    assert v2["infer_id"] == "e2e-1"
    for answer in (v2["infer"], v2["infer_one_tensor"]):
        assert answer["label"]["data"] == [expected["label"]]
        classes = json.loads(answer["probabilities"]["parameters"]["classes"])
        assert answer["probabilities"]["shape"] == [1, len(classes)]
        assert answer["probabilities"]["data"] == [expected["probabilities"][c] for c in classes]


def test_v2_explain_is_recorded(report: dict[str, Any]) -> None:
    explained = report["v2"]["explain"]
    tensors = {o["name"]: o for o in explained["outputs"]}
    assert tensors["attributions"]["shape"] == [1, len(LOAN_ROW)]
    record_id = explained["parameters"]["explanation_id"]
    record = report["http"].get(f"{report['base']}/v1/explanations/{record_id}", timeout=60).json()
    assert record["kind"] == "shap" and record["request"]["instances"] == [LOAN_ROW]
    base, value = tensors["base_value"]["data"][0], tensors["output_value"]["data"][0]
    assert sum(tensors["attributions"]["data"]) == pytest.approx(value - base, abs=1e-4)


def test_v2_errors_reach_the_sdk_with_their_message(report: dict[str, Any]) -> None:
    error = report["v2"]["error"]
    assert "instances.0.purpose" in error and "Unknown category" in error, error

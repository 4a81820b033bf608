"""Two real gunicorn hosts on one PostgreSQL, each with its own data dir: a tabular and a text model uploaded
to one are served by the other, their files in the database or behind a ``file://`` URL (another
directory)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from gunicorn_process import free_port, running_gunicorn, server_env
from text_oracles import TEXTS, manifest_text, softmax, tar_of_directory, tiny_bert_dir
from tiny_models import FEATURES, tiny_frame, tiny_manifest, tiny_pipeline

from model_store.reference import to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store

pytestmark = pytest.mark.e2e

FRAME = tiny_frame()
PIPELINE = tiny_pipeline(FRAME)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory)


def host_env(data: Path, database_url: str, artifact_store: str) -> dict[str, str]:
    return server_env(
        data,
        free_port(),
        CANDOR_DATABASE_URL=database_url,
        CANDOR_ARTIFACT_STORE=artifact_store,
        CANDOR_WORKERS="1",
        CANDOR_WARM_MODELS="off",
        CANDOR_LOG_LEVEL="warning",
    )


def register(base: str, token: str) -> None:
    """The tiny tabular model and the tiny text model, uploaded over HTTP."""
    headers = {"Authorization": f"Bearer {token}"}
    tabular = requests.post(
        f"{base}/v1/models/tiny/versions",
        data={"manifest": json.dumps(tiny_manifest())},
        files={
            "artifact": ("model.skops", io.BytesIO(dump_skops(PIPELINE))),
            "reference": ("reference.parquet", io.BytesIO(to_parquet(FRAME))),
        },
        headers=headers,
        timeout=120,
    )
    assert tabular.status_code == 201, tabular.text


def register_text(base: str, token: str, directory: Path) -> None:
    text = requests.post(
        f"{base}/v1/models/triage/versions",
        data={"manifest": manifest_text()},
        files={"artifact": ("model.tar.gz", io.BytesIO(tar_of_directory(directory)))},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert text.status_code == 201, text.text


def predict(base: str, token: str, name: str, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = requests.post(
        f"{base}/v1/models/{name}/versions/1/predict",
        json={"instances": instances},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


@pytest.mark.parametrize("kind", ["database", "file"])
def test_a_model_uploaded_to_one_host_is_served_by_the_other(
    tmp_path: Path, postgres_url: str, tiny_dir: Path, kind: str
) -> None:
    database_url = postgres_url
    artifact_store = "database" if kind == "database" else (tmp_path / "objects").as_uri()
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    store = Store(a_dir, database_url, artifact_store=artifact_store)
    token, _ = store.keys.create("hosts", ["explain", "models:write"])
    store.close()
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(
            running_gunicorn(host_env(a_dir, database_url, artifact_store), tmp_path / "a.log")
        )
        b = stack.enter_context(
            running_gunicorn(host_env(b_dir, database_url, artifact_store), tmp_path / "b.log")
        )
        register(a.base, token)
        register_text(a.base, token, tiny_dir)

        rows = FRAME[FEATURES].head(3)
        instances = [
            {"size": float(r["size"]), "colour": str(r["colour"]), "weight": float(r["weight"])}
            for r in rows.to_dict("records")
        ]
        got = [
            [p["probabilities"][c] for c in ("no", "yes")] for p in predict(b.base, token, "tiny", instances)
        ]
        np.testing.assert_allclose(got, PIPELINE.predict_proba(rows), rtol=0, atol=1e-9)
        texts = predict(b.base, token, "triage", [{"text": t} for t in TEXTS])
        for text, prediction in zip(TEXTS, texts, strict=True):
            expected = softmax(tiny_dir, text)
            got_text = [prediction["probabilities"][label] for label in ("routine", "urgent")]
            np.testing.assert_allclose(got_text, expected, rtol=0, atol=1e-6)
    assert not (b_dir / "artifacts" / "sha256").exists(), "host B stored nothing of its own"
    assert any((b_dir / "artifact-cache" / "sha256").rglob("*")), "host B cached what it served"

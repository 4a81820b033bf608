"""Open Inference Protocol V2 on a text model (the tiny BERT): one BYTES input of texts, answers equal to V1
predict; SHAP's explain extension is refused as on V1 (it does not apply to text models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from text_oracles import TEXTS, bearer, text_app, tiny_bert_dir
from tiny_text import LABELS, tiny_manifest

from model_store.manifest import parse_manifest
from model_store.text.files import read_directory

TRIAGE = "/v2/models/triage"


@pytest.fixture
def triage(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    app = text_app(tmp_path / "data")
    store = app.extensions["candor"].store
    files = read_directory(tiny_bert_dir(tmp_path_factory), 200, 10**9)
    store.registry.register_text(parse_manifest(tiny_manifest()), files)
    yield app, store.keys.create("v2-text", ["explain"])[0]
    store.close()


def test_text_model_metadata_and_infer_match_v1(triage: tuple[Flask, str]) -> None:
    app, token = triage
    client, auth = app.test_client(), bearer(token)
    meta = client.get(TRIAGE, headers=auth).get_json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"][1] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(LABELS)]}
    body = {"inputs": [{"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}]}
    response = client.post(f"{TRIAGE}/infer", json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    tensors = {t["name"]: t for t in response.get_json()["outputs"]}
    v1 = client.post(
        "/v1/models/triage/versions/latest/predict",
        json={"instances": [{"text": t} for t in TEXTS]},
        headers=auth,
    ).get_json()["predictions"]
    assert tensors["label"]["data"] == [p["label"] for p in v1]
    assert tensors["probabilities"]["data"] == [p["probabilities"][c] for p in v1 for c in LABELS]


def test_text_model_refuses_other_tensors_and_shap(triage: tuple[Flask, str]) -> None:
    app, token = triage
    client, auth = app.test_client(), bearer(token)
    numbers = {"inputs": [{"name": "text", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    refused = client.post(f"{TRIAGE}/infer", json=numbers, headers=auth)
    assert refused.status_code == 422 and "BYTES" in refused.get_json()["error"]
    texts = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": TEXTS[:1]}]}
    explained = client.post(f"{TRIAGE}/explain", json=texts, headers=auth)
    assert explained.status_code == 422 and "shap does not apply" in explained.get_json()["error"]

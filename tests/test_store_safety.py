"""Artifact safety: pickles are never loaded, skops files declaring untrusted types are refused by name,
garbage is refused; both through the registry and through the REST upload route."""

from __future__ import annotations

import collections
import io
import os
import pathlib
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from flask import Flask
from flask.testing import FlaskClient
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

from model_store.errors import InvalidManifest, UnsafeArtifact
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import TRUSTED_TYPES, dump_skops, load_skops
from model_store.store import Store

PROBLEM = "application/problem+json"


# -- tiny fixture model: size and colour only, a noiseless label ------------------------------------------
def safe_manifest(name: str = "safe") -> dict[str, Any]:
    return tiny_manifest(name, weight=False, target=None)


_FRAME = tiny_frame(40, seed=1, weight=False, noise=False)
_PIPELINE = tiny_pipeline(_FRAME, n_estimators=5)
_REFERENCE = to_parquet(_FRAME)


# -- hostile artifacts -------------------------------------------------------------------------------------
class _TouchOnUnpickle:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class _SystemOnUnpickle:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch '{self.marker}'",))


class Sneaky:
    """A custom class: skops records it as an untrusted type."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def armed_pickle(kind: str, marker: Path) -> bytes:
    """A pickle whose loading would create ``marker``; checked by disassembly, never loaded."""
    payload = _TouchOnUnpickle(marker) if kind == "touch" else _SystemOnUnpickle(marker)
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    strings = [str(arg) for _op, arg, _pos in pickletools.genops(data) if arg is not None]
    expected = {"touch": "Path.touch", "system": "system"}[kind]
    assert expected in strings, strings  # the payload really calls the function on load
    return data


def zipped_pickle(marker: Path) -> bytes:
    """A zip archive (as joblib-style uploads are) holding an armed pickle and no skops schema."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.pkl", armed_pickle("touch", marker))
    return buffer.getvalue()


def untrusted_skops(kind: str) -> tuple[bytes, str]:
    """A skops file and the untrusted type it declares."""
    if kind == "counter":
        data = sio.dumps({"weights": collections.Counter("abracadabra")})
    elif kind == "custom-class":
        data = sio.dumps(Sneaky())
    else:  # a fitted-looking pipeline that would call os.system on every transform
        data = sio.dumps(Pipeline([("run", FunctionTransformer(func=os.system)), ("model", _PIPELINE)]))
    declared = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    assert len(declared) == 1, declared
    return bytes(data), declared[0]


UNTRUSTED = ["counter", "custom-class", "os-system-transformer"]
GARBAGE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00\x01\x02garbage" * 50, id="bytes"),
    pytest.param(b"PK\x03\x04 truncated zip", id="truncated-zip"),
    pytest.param(_REFERENCE, id="parquet-as-artifact"),
]


# -- the loader and the registry ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["touch", "system"])
def test_pickle_is_refused_without_running_it(store: Store, tmp_path: Path, kind: str) -> None:
    marker = tmp_path / f"pwned-{kind}"
    data = armed_pickle(kind, marker)
    with pytest.raises(UnsafeArtifact) as caught:
        store.registry.register_tabular(parse_manifest(safe_manifest()), data, _REFERENCE)
    assert caught.value.status == 422
    assert "artifact" in caught.value.errors
    assert not marker.exists()
    assert store.registry.list_models() == []
    assert list(store.registry.artifacts.root.iterdir()) == []


def test_pickle_inside_a_zip_is_refused_without_running_it(store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "pwned-zip"
    with pytest.raises(UnsafeArtifact) as caught:
        store.registry.register_tabular(parse_manifest(safe_manifest()), zipped_pickle(marker), _REFERENCE)
    assert "artifact" in caught.value.errors
    assert not marker.exists()
    assert store.registry.list_models() == []


@pytest.mark.parametrize("kind", UNTRUSTED)
def test_untrusted_skops_type_is_refused_by_name(store: Store, kind: str) -> None:
    data, declared = untrusted_skops(kind)
    with pytest.raises(UnsafeArtifact) as caught:
        store.registry.register_tabular(parse_manifest(safe_manifest()), data, _REFERENCE)
    assert caught.value.status == 422
    assert declared in caught.value.detail
    assert caught.value.errors["artifact"] == [f"untrusted type: {declared}"]
    assert store.registry.list_models() == []


@pytest.mark.parametrize("data", GARBAGE)
def test_garbage_artifact_is_refused(data: bytes) -> None:
    with pytest.raises(UnsafeArtifact) as caught:
        load_skops(data)
    assert "artifact" in caught.value.errors


def test_trusted_pipeline_round_trips() -> None:
    """The allowlist is wide enough for the tree models the service supports."""
    loaded = load_skops(dump_skops(_PIPELINE))
    np.testing.assert_array_equal(
        loaded.predict_proba(_FRAME[["size", "colour"]]), _PIPELINE.predict_proba(_FRAME[["size", "colour"]])
    )


def test_skops_file_that_is_not_an_estimator_is_refused(store: Store) -> None:
    with pytest.raises(InvalidManifest) as caught:
        store.registry.register_tabular(parse_manifest(safe_manifest()), dump_skops({"a": 1}), _REFERENCE)
    assert "task" in caught.value.errors
    assert store.registry.list_models() == []


# -- the REST upload route ---------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(client: FlaskClient, token: str, artifact: bytes, name: str = "safe"):
    import json

    return client.post(
        f"/v1/models/{name}/versions",
        data={
            "manifest": json.dumps(safe_manifest(name)),
            "artifact": (io.BytesIO(artifact), "model.skops"),
            "reference": (io.BytesIO(_REFERENCE), "reference.parquet"),
        },
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def assert_refused(response, app: Flask) -> dict[str, Any]:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == 422
    assert body["instance"] == "/v1/models/safe/versions"
    assert "artifact" in body["errors"]
    registry = app.extensions["candor"].store.registry
    assert [m["name"] for m in registry.list_models()] == ["clinical", "loan"]
    return body


def test_rest_refuses_pickles_without_running_them(
    app: Flask, client: FlaskClient, keys: dict[str, str], tmp_path: Path
) -> None:
    artifacts = app.extensions["candor"].store.registry.artifacts.root
    before = set(artifacts.iterdir())
    for kind in ("touch", "system"):
        marker = tmp_path / f"rest-pwned-{kind}"
        body = assert_refused(upload(client, keys["models:write"], armed_pickle(kind, marker)), app)
        assert body["type"].endswith("/unsafe-artifact")
        assert not marker.exists()
    marker = tmp_path / "rest-pwned-zip"
    assert_refused(upload(client, keys["models:write"], zipped_pickle(marker)), app)
    assert not marker.exists()
    assert set(artifacts.iterdir()) == before


def test_rest_refuses_untrusted_skops_types_by_name(
    app: Flask, client: FlaskClient, keys: dict[str, str]
) -> None:
    for kind in UNTRUSTED:
        data, declared = untrusted_skops(kind)
        body = assert_refused(upload(client, keys["models:write"], data), app)
        assert declared in body["detail"]
        assert body["errors"]["artifact"] == [f"untrusted type: {declared}"]


def test_rest_refuses_garbage(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    for data in (b"", b"\x00garbage\xff" * 100, b"PK\x03\x04broken"):
        assert_refused(upload(client, keys["models:write"], data), app)


def test_rest_accepts_the_safe_artifact(app: Flask, client: FlaskClient, keys: dict[str, str]) -> None:
    """The control case: the same request with a real skops artifact is registered."""
    response = upload(client, keys["models:write"], dump_skops(_PIPELINE))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["version"] == 1

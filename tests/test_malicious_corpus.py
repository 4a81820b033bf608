"""The rest of the malicious-artifact corpus (pickles, untrusted skops types, traversing and linking archive
members, auto_map and .bin-only models are in test_store_safety.py and test_text_models.py): a skops file
declaring ``builtins.exec``, the same with a forged trust list in the upload, and compression bombs. Every one
is a 4xx, runs nothing, and writes nothing outside the store."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio
from conftest import bearer
from flask import Flask
from sklearn.preprocessing import FunctionTransformer
from test_store_safety import _REFERENCE, safe_manifest
from text_oracles import manifest_text

from model_store.safe_load import TRUSTED_TYPES


def exec_skops() -> bytes:
    """A skops file whose transformer calls ``exec`` on its input: the type it declares is builtins.exec."""
    data = bytes(sio.dumps(FunctionTransformer(func=exec)))
    assert "builtins.exec" in sio.get_untrusted_types(data=data)
    assert "builtins.exec" not in TRUSTED_TYPES
    return data


def forged_trust(data: bytes) -> bytes:
    """The same file with a trust list written into the archive itself: the server never reads one."""
    buffer = io.BytesIO(data)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(
            "trusted.json", json.dumps(["builtins.exec", "sklearn.preprocessing.FunctionTransformer"])
        )
    return buffer.getvalue()


def zip_bomb(size: int) -> bytes:
    """A model directory whose one extra member inflates to ``size`` bytes from a few kilobytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("zeros.json", b"\0" * size)
    return buffer.getvalue()


def tar_gz_bomb(size: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("model/zeros.json")
        info.size = size
        archive.addfile(info, io.BytesIO(b"\0" * size))
    return gzip.compress(raw.getvalue(), compresslevel=9)


def snapshot(root: Path, inside: Path) -> set[str]:
    """Every path under ``root`` except the store's own directory."""
    return {str(p) for p in root.rglob("*") if inside not in p.parents and p != inside}


@pytest.fixture
def guarded(make_app: Any, tmp_path: Path) -> tuple[Flask, str]:
    app = make_app(max_archive_bytes=1_000_000)
    return app, app.extensions["candor"].store.keys.create("writer", ["models:write"])[0]


def _post(app: Flask, token: str, name: str, data: dict[str, Any]) -> Any:
    return app.test_client().post(
        f"/v1/models/{name}/versions", data=data, headers=bearer(token), content_type="multipart/form-data"
    )


@pytest.mark.parametrize("forged", [False, True])
def test_a_skops_file_declaring_exec_is_refused_by_name(guarded: tuple[Flask, str], forged: bool) -> None:
    app, token = guarded
    artifact = forged_trust(exec_skops()) if forged else exec_skops()
    response = _post(
        app,
        token,
        "safe",
        {
            "manifest": json.dumps(safe_manifest()),
            "artifact": (io.BytesIO(artifact), "model.skops"),
            "reference": (io.BytesIO(_REFERENCE), "reference.parquet"),
        },
    )
    assert response.status_code == 422, response.get_json()
    assert "builtins.exec" in response.get_json()["errors"]["artifact"][0]


def test_a_trust_list_in_the_upload_form_or_manifest_is_refused(guarded: tuple[Flask, str]) -> None:
    app, token = guarded
    parts = {
        "artifact": (io.BytesIO(exec_skops()), "model.skops"),
        "reference": (io.BytesIO(_REFERENCE), "r.parquet"),
    }
    in_form = _post(
        app, token, "safe", {**parts, "manifest": json.dumps(safe_manifest()), "trusted": "builtins.exec"}
    )
    assert in_form.status_code == 422 and "trusted" in in_form.get_json()["errors"]
    parts = {
        "artifact": (io.BytesIO(exec_skops()), "model.skops"),
        "reference": (io.BytesIO(_REFERENCE), "r.parquet"),
    }
    manifest = {**safe_manifest(), "trusted": ["builtins.exec"]}
    in_manifest = _post(app, token, "safe", {**parts, "manifest": json.dumps(manifest)})
    assert in_manifest.status_code == 422 and "manifest.trusted" in in_manifest.get_json()["errors"]


@pytest.mark.parametrize("bomb", [zip_bomb, tar_gz_bomb])
def test_compression_bombs_are_refused_and_never_written(
    guarded: tuple[Flask, str], tmp_path: Path, bomb: Any
) -> None:
    app, token = guarded
    payload = bomb(50_000_000)
    assert len(payload) < 200_000, "small on the wire, 50 MB inflated"
    data_dir = app.extensions["candor"].settings.data_dir
    before = snapshot(tmp_path, data_dir), snapshot(data_dir, data_dir / "nothing")
    response = _post(
        app, token, "triage", {"manifest": manifest_text(), "artifact": (io.BytesIO(payload), "m.zip")}
    )
    assert response.status_code == 422 and "artifact" in response.get_json()["errors"], response.get_json()
    after = snapshot(tmp_path, data_dir), snapshot(data_dir, data_dir / "nothing")
    assert after[0] == before[0], "nothing written outside the data dir"
    assert {p for p in after[1] - before[1] if "artifact" in p} == set(), "nothing stored"
    assert not any(os.path.getsize(p) > 1_000_000 for p in after[1] - before[1] if os.path.isfile(p))

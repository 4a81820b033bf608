"""Text models in the store: registration through the real paths (REST archive upload, the CLI, the registry
from a directory), predictions equal to the model's own softmax, refusals that leave nothing behind, and
tampered files that are never served.

The tiny BERT is built once per session (``text_oracles.tiny_bert_dir``); the oracle is the same directory
loaded with transformers directly, never the store's copy."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from flask import Flask
from stored_files import stored_files
from text_oracles import (
    TEXTS,
    artifact_dirs,
    assert_problem,
    bearer,
    manifest_text,
    model_files,
    softmax,
    tar_bytes,
    tar_of_directory,
    text_app,
    tiny_bert_dir,
    tokens_for,
    upload,
    zip_bytes,
    zip_of_directory,
)
from tiny_text import LABELS, MAX_TOKENS, tiny_manifest

from api.ops.cli import main
from model_store.errors import UnsafeArtifact
from model_store.manifest import parse_manifest
from model_store.store import Store
from model_store.text.files import read_directory

Build = Callable[[dict[str, bytes]], tuple[bytes, str, dict[str, Any]]]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory)


@pytest.fixture
def db_app(tmp_path: Path, database_url: str) -> Iterator[Flask]:
    """An empty app on SQLite and, when configured, on PostgreSQL."""
    application = text_app(tmp_path / "data", database_url)
    yield application
    application.extensions["candor"].store.close()


@pytest.fixture
def make_text_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Empty SQLite apps with settings overrides."""
    made: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        made.append(text_app(tmp_path / f"data-{len(made)}", **overrides))
        return made[-1]

    yield build
    for application in made:
        application.extensions["candor"].store.close()


def predict(app: Flask, token: str, version: str, texts: list[str]) -> Any:
    return app.test_client().post(
        f"/v1/models/triage/versions/{version}/predict",
        json={"instances": [{"text": t} for t in texts]},
        headers=bearer(token),
    )


def assert_softmax(tiny_dir: Path, texts: list[str], predictions: list[dict[str, Any]]) -> None:
    assert len(predictions) == len(texts)
    for text, prediction in zip(texts, predictions, strict=True):
        expected = softmax(tiny_dir, text)
        got = np.array([prediction["probabilities"][label] for label in LABELS])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert prediction["label"] == LABELS[int(expected.argmax())]


def assert_stored_copy(app: Flask, version: int, tiny_dir: Path) -> None:
    """The version's files are the model's files byte for byte, and a listing of their sha256; the
    directory the host loads holds exactly those."""
    registry = app.extensions["candor"].store.registry
    info = registry.resolve("triage", version)
    stored = registry.files(info)
    source = model_files(tiny_dir)
    listing = json.loads(stored.pop("files.json"))
    assert listing == {name: hashlib.sha256(data).hexdigest() for name, data in source.items()}
    assert stored == source
    directory = registry.directory(info)
    assert {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()} == {
        *source,
        "files.json",
    }
    assert {name: (directory / name).read_bytes() for name in source} == source


# -- registration through the real paths -------------------------------------------------------------------
def test_rest_upload_of_a_tar_gz_and_a_zip_registers_and_predicts_the_models_own_softmax(
    db_app: Flask, tiny_dir: Path
) -> None:
    tokens = tokens_for(db_app)
    client = db_app.test_client()
    archives = {"1": tar_of_directory(tiny_dir), "2": zip_of_directory(tiny_dir)}
    for version, archive in archives.items():
        response = upload(db_app, tokens["models:write"], archive)
        assert response.status_code == 201, response.get_json()
        created = response.get_json()
        assert created["version"] == int(version)
        assert_stored_copy(db_app, int(version), tiny_dir)
        described = client.get(f"/v1/models/triage/versions/{version}", headers=bearer(tokens["explain"]))
        assert described.status_code == 200
        body = described.get_json()
        assert body == created
        assert body["flavour"] == "text"
        assert body["methods"] == ["attention", "attributions"]
        assert body["feature_order"] == ["text"]
        assert body["manifest"]["task"] == "text_classification"
        assert body["manifest"]["classes"] == LABELS
        assert body["manifest"]["max_tokens"] == MAX_TOKENS
        response = predict(db_app, tokens["explain"], version, TEXTS)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["model"]["sha256"] == created["artifact_sha256"]
        assert_softmax(tiny_dir, TEXTS, response.get_json()["predictions"])
    # the same files in two archive formats are the same version content
    shas = [
        client.get(f"/v1/models/triage/versions/{v}", headers=bearer(tokens["explain"])).get_json()[
            "artifact_sha256"
        ]
        for v in archives
    ]
    assert shas[0] == shas[1]
    listed = client.get("/v1/models", headers=bearer(tokens["explain"])).get_json()["models"]
    assert [(m["name"], m["latest_version"]) for m in listed] == [("triage", 2)]


def test_registry_registers_a_model_directory(store: Store, tiny_dir: Path) -> None:
    """The CLI's path: read the directory, register, load from disk (verified), predict."""
    files = read_directory(tiny_dir, max_members=200, max_bytes=2**31)
    info = store.registry.register_text(parse_manifest(tiny_manifest()), files)
    assert (info.name, info.version, info.flavour) == ("triage", 1, "text")
    resolved = store.registry.resolve("triage", "latest")
    assert resolved.artifact_sha256 == info.artifact_sha256
    listing = store.registry.files(resolved)["files.json"]
    assert hashlib.sha256(listing).hexdigest() == info.artifact_sha256
    model = store.registry.load(resolved)
    probabilities = model.probabilities(model.validate([{"text": t} for t in TEXTS]))
    for text, row in zip(TEXTS, probabilities, strict=True):
        np.testing.assert_allclose(row, softmax(tiny_dir, text), rtol=0, atol=1e-6)


def test_cli_registers_a_model_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "var"
    monkeypatch.setenv("CANDOR_DATA_DIR", str(data))
    monkeypatch.delenv("CANDOR_DATABASE_URL", raising=False)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(tiny_manifest()))
    args = ["models", "register", "--manifest", str(manifest), "--artifact", str(tiny_dir)]
    assert main(args) == 0
    assert "registered triage version 1" in capsys.readouterr().out
    # a directory holding a link is refused like a link in an archive
    linked = shutil.copytree(tiny_dir, tmp_path / "linked")
    (linked / "vocab.txt").symlink_to("/etc/passwd")
    assert main(["models", "register", "--manifest", str(manifest), "--artifact", str(linked)]) == 2
    assert "artifact" in capsys.readouterr().err
    with pytest.raises(UnsafeArtifact) as refused:
        read_directory(linked, max_members=200, max_bytes=2**31)
    assert "artifact" in refused.value.errors
    # what the CLI registered is served by the app over the same data dir
    app = text_app(data)
    try:
        token = tokens_for(app)["explain"]
        described = app.test_client().get("/v1/models/triage/versions/latest", headers=bearer(token))
        assert described.get_json()["version"] == 1
        assert described.get_json()["flavour"] == "text"
        assert_softmax(tiny_dir, TEXTS, predict(app, token, "1", TEXTS).get_json()["predictions"])
    finally:
        app.extensions["candor"].store.close()


def test_registration_needs_a_models_write_key(make_text_app: Callable[..., Flask], tiny_dir: Path) -> None:
    app = make_text_app()
    tokens = tokens_for(app)
    archive = tar_of_directory(tiny_dir)
    assert_problem(upload(app, tokens["explain"], archive), 403)
    response = app.test_client().post(
        "/v1/models/triage/versions",
        data={"manifest": manifest_text()},
        content_type="multipart/form-data",
    )
    assert_problem(response, 401)
    assert artifact_dirs(app) == []


# -- refusals: a 422 naming the field, and nothing stored ----------------------------------------------------
def _json_edit(files: dict[str, bytes], name: str, **changes: Any) -> dict[str, bytes]:
    return {**files, name: json.dumps({**json.loads(files[name]), **changes}).encode()}


def _without(files: dict[str, bytes], *names: str) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k not in names}


def _tar(files: dict[str, bytes], **manifest: Any) -> tuple[bytes, str, dict[str, Any]]:
    return tar_bytes(files), manifest_text(**manifest), {}


def _renamed_weights(name: str) -> Build:
    def build(files: dict[str, bytes]) -> tuple[bytes, str, dict[str, Any]]:
        return _tar({**_without(files, "model.safetensors"), name: files["model.safetensors"]})

    return build


def _members(*names: str, prefix: str = "") -> Build:
    """The model's files plus members with the given (hostile) names, at the archive root."""

    def build(files: dict[str, bytes]) -> tuple[bytes, str, dict[str, Any]]:
        hostile = {name: b"escaped" for name in names}
        return tar_bytes({**files, **hostile}, prefix=prefix), manifest_text(), {}

    return build


def _too_many_bytes(files: dict[str, bytes]) -> tuple[bytes, str, dict[str, Any]]:
    return tar_bytes(files), manifest_text(), {"max_archive_bytes": sum(map(len, files.values())) - 1}


def _truncated_tar_gz(files: dict[str, bytes]) -> tuple[bytes, str, dict[str, Any]]:
    archive = tar_bytes(files)
    return archive[: len(archive) // 2], manifest_text(), {}


def _zip_with_a_bad_crc(files: dict[str, bytes]) -> tuple[bytes, str, dict[str, Any]]:
    """Stored (not deflated) members, one data byte flipped: the CRC-32 no longer matches."""
    archive = bytearray(zip_bytes(files, compression=zipfile.ZIP_STORED))
    archive[archive.index(files["config.json"]) + 1] ^= 0x01
    return bytes(archive), manifest_text(), {}


REFUSALS = [
    pytest.param(
        lambda f: _tar(_json_edit(f, "config.json", auto_map={"AutoModel": "modeling_evil.Evil"})),
        "artifact",
        id="auto_map-in-config",
    ),
    pytest.param(
        lambda f: _tar(_json_edit(f, "tokenizer_config.json", auto_map={"AutoTokenizer": ["evil.T", None]})),
        "artifact",
        id="auto_map-in-tokenizer-config",
    ),
    pytest.param(_renamed_weights("pytorch_model.bin"), "artifact", id="bin-weights-only"),
    pytest.param(_renamed_weights("model.pt"), "artifact", id="pt-weights-only"),
    pytest.param(
        lambda f: _tar({**f, "modeling_evil.py": b"raise SystemExit('never run')\n"}),
        "artifact",
        id="python-file",
    ),
    pytest.param(_members("../evil.txt"), "artifact", id="dotdot-member"),
    pytest.param(_members("tiny/../../evil.txt"), "artifact", id="nested-dotdot-member"),
    pytest.param(_members("/tmp/candor-evil.txt"), "artifact", id="absolute-member"),
    pytest.param(_members("C:/candor-evil.txt"), "artifact", id="drive-letter-member"),
    pytest.param(_members("..\\evil.txt"), "artifact", id="backslash-member"),
    pytest.param(
        lambda f: (zip_bytes({**f, "../evil.txt": b"escaped"}), manifest_text(), {}),
        "artifact",
        id="zip-dotdot-member",
    ),
    pytest.param(
        lambda f: (tar_bytes(f, symlinks={"vocab.txt": "/etc/passwd"}), manifest_text(), {}),
        "artifact",
        id="tar-symlink",
    ),
    pytest.param(
        lambda f: (tar_bytes(f, hardlinks={"vocab.txt": "/etc/passwd"}), manifest_text(), {}),
        "artifact",
        id="tar-hardlink",
    ),
    pytest.param(
        lambda f: (zip_bytes(f, symlinks={"vocab.txt": "/etc/passwd"}), manifest_text(), {}),
        "artifact",
        id="zip-symlink",
    ),
    pytest.param(
        lambda f: (tar_bytes(f), manifest_text(), {"max_archive_members": len(f) - 1}),
        "artifact",
        id="too-many-members",
    ),
    pytest.param(_too_many_bytes, "artifact", id="too-many-bytes"),
    pytest.param(lambda f: _tar(f, classes=LABELS[::-1]), "classes", id="classes-not-id2label"),
    pytest.param(lambda f: _tar(f, classes=["routine", "urgent", "other"]), "classes", id="classes-extra"),
    pytest.param(lambda f: _tar(_without(f, "config.json")), "artifact", id="no-config"),
    pytest.param(lambda f: _tar(_without(f, "model.safetensors")), "artifact", id="no-weights"),
    pytest.param(lambda f: _tar({**f, "files.json": b"{}"}), "artifact", id="reserved-listing"),
    pytest.param(
        lambda f: _tar(f, features=[{"name": "age", "type": "numeric"}]),
        "manifest.features",
        id="features-for-text",
    ),
    pytest.param(lambda f: _tar(f, max_tokens=None), "manifest.max_tokens", id="no-max-tokens"),
    pytest.param(lambda f: _tar(f, max_tokens=2 * MAX_TOKENS), "max_tokens", id="max-tokens-over-positions"),
    pytest.param(lambda f: (b"not an archive at all", manifest_text(), {}), "artifact", id="not-an-archive"),
    # a version is config + weights + tokenizer files; without them transformers silently builds a
    # five-token vocabulary that maps every word to [UNK]
    pytest.param(
        lambda f: _tar(_without(f, "tokenizer.json", "tokenizer_config.json")), "artifact", id="no-tokenizer"
    ),
    pytest.param(lambda f: _tar(_without(f, "tokenizer.json")), "artifact", id="no-tokenizer-json"),
    # broken uploads are the client's fault: 422, never a 500
    pytest.param(_truncated_tar_gz, "artifact", id="truncated-tar-gz"),
    pytest.param(_zip_with_a_bad_crc, "artifact", id="zip-bad-crc"),
    pytest.param(
        lambda f: _tar({**f, "model.safetensors": b"\xff" * 64}), "artifact", id="garbage-safetensors"
    ),
]


@pytest.mark.parametrize(("build", "field"), REFUSALS)
def test_refused_uploads_are_422_naming_the_field_and_store_nothing(
    make_text_app: Callable[..., Flask], tiny_dir: Path, tmp_path: Path, build: Build, field: str
) -> None:
    archive, manifest, overrides = build(model_files(tiny_dir))
    app = make_text_app(**overrides)
    tokens = tokens_for(app)
    client = app.test_client()
    models_before = client.get("/v1/models", headers=bearer(tokens["explain"])).get_json()
    assert_problem(upload(app, tokens["models:write"], archive, manifest), 422, field)
    assert client.get("/v1/models", headers=bearer(tokens["explain"])).get_json() == models_before
    assert_problem(client.get("/v1/models/triage", headers=bearer(tokens["explain"])), 404)
    assert artifact_dirs(app) == []
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/candor-evil.txt").exists()


def test_zip_written_with_writestr_defaults_is_accepted(
    make_text_app: Callable[..., Flask], tiny_dir: Path
) -> None:
    """``ZipFile.writestr(name, data)`` stores mode 0o600 without a file-type bit: still a plain file."""
    app = make_text_app()
    archive = zip_bytes(model_files(tiny_dir), unix_mode=None)
    response = upload(app, tokens_for(app)["models:write"], archive)
    assert response.status_code == 201, response.get_json()


def test_refusals_after_loading_keep_earlier_versions_on_either_database(
    db_app: Flask, tiny_dir: Path
) -> None:
    """Refusals found only once transformers has loaded the written directory remove it again."""
    tokens = tokens_for(db_app)
    assert upload(db_app, tokens["models:write"], tar_of_directory(tiny_dir)).status_code == 201
    client = db_app.test_client()
    before = client.get("/v1/models/triage", headers=bearer(tokens["explain"])).get_json()
    dirs = artifact_dirs(db_app)
    archive = tar_of_directory(tiny_dir)
    for manifest, field in [
        (manifest_text(classes=LABELS[::-1]), "classes"),
        (manifest_text(max_tokens=2 * MAX_TOKENS), "max_tokens"),
        (manifest_text(features=[{"name": "age", "type": "numeric"}]), "manifest.features"),
    ]:
        assert_problem(upload(db_app, tokens["models:write"], archive, manifest), 422, field)
        assert client.get("/v1/models/triage", headers=bearer(tokens["explain"])).get_json() == before
        assert artifact_dirs(db_app) == dirs
    assert upload(db_app, tokens["models:write"], archive).get_json()["version"] == 2


# -- tampering -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "config.json", "files.json"])
def test_a_tampered_stored_file_is_never_served(
    tmp_path: Path, database_url: str, tiny_dir: Path, name: str
) -> None:
    data = tmp_path / "data"
    first = text_app(data, database_url)
    try:
        tokens = tokens_for(first)
        assert upload(first, tokens["models:write"], tar_of_directory(tiny_dir)).status_code == 201
        store = first.extensions["candor"].store
        path = stored_files(store, store.registry.resolve("triage", "1"))[name]
    finally:
        first.extensions["candor"].store.close()
    original = path.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    path.write_bytes(bytes(tampered))
    fresh = text_app(data, database_url)  # an empty model cache: the files are read and verified
    try:
        client = fresh.test_client()
        headers = bearer(tokens["explain"])
        body = {"instances": [{"text": TEXTS[0]}]}
        for url in ("predict", "explain/attention", "explain/attributions"):
            response = client.post(f"/v1/models/triage/versions/1/{url}", json=body, headers=headers)
            problem = assert_problem(response, 500)
            assert problem["type"].endswith("artifact-integrity"), problem
            assert "predictions" not in problem and "results" not in problem
        assert_problem(client.get("/v1/models/triage/versions/1", headers=headers), 500)
    finally:
        fresh.extensions["candor"].store.close()
    path.write_bytes(original)  # restored: served again
    restored = text_app(data, database_url)
    try:
        response = predict(restored, tokens["explain"], "1", TEXTS)
        assert response.status_code == 200
        assert_softmax(tiny_dir, TEXTS, response.get_json()["predictions"])
    finally:
        restored.extensions["candor"].store.close()


def test_a_file_added_to_a_stored_version_is_never_served(
    tmp_path: Path, database_url: str, tiny_dir: Path
) -> None:
    """transformers would read an extra tokenizer file it finds; the directory a host loads must hold exactly
    the files that were registered: one that holds more is rebuilt from the stored files."""
    data = tmp_path / "data"
    first = text_app(data, database_url)
    try:
        tokens = tokens_for(first)
        assert upload(first, tokens["models:write"], tar_of_directory(tiny_dir)).status_code == 201
        registry = first.extensions["candor"].store.registry
        directory = registry.directory(registry.resolve("triage", "1"))
    finally:
        first.extensions["candor"].store.close()
    added = directory / "added_tokens.json"
    added.write_text('{"[EVIL]": 5}')
    fresh = text_app(data, database_url)
    try:
        response = predict(fresh, tokens["explain"], "1", TEXTS)
        assert response.status_code == 200, response.get_json()
        assert_softmax(tiny_dir, TEXTS, response.get_json()["predictions"])
        assert not added.exists()
    finally:
        fresh.extensions["candor"].store.close()

"""Artifacts any host can load: a version registered through one Store (host A, its own data dir) is served
by another (host B, another data dir, A's deleted), with the files in the database or behind an fsspec
``file://`` URL; content addressed (stored once), verified on every load, cached per host."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from gunicorn_process import ROOT, free_port, server_env
from text_oracles import TEXTS, model_files, softmax, tiny_bert_dir
from tiny_models import FEATURES, tiny_frame, tiny_manifest, tiny_pipeline
from tiny_text import tiny_manifest as text_manifest

from model_store import blob_db
from model_store.blob_backends import ArtifactStoreConfigError
from model_store.errors import IntegrityError
from model_store.manifest import parse_manifest
from model_store.reference import read_reference, to_parquet
from model_store.safe_load import dump_skops
from model_store.store import Store
from model_store.text.files import read_directory
from model_store.versions import VersionInfo

FRAME = tiny_frame()
PIPELINE = tiny_pipeline(FRAME)
ARTIFACT = dump_skops(PIPELINE)
REFERENCE = to_parquet(FRAME)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert_dir(tmp_path_factory)


@pytest.fixture(params=["database", "file"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The shared store: the database's ``artifact_parts``, or a directory outside every data dir."""
    return "database" if request.param == "database" else (tmp_path / "objects").as_uri()


class Hosts:
    """Stores over one database and one artifact store, each with its own data dir."""

    def __init__(self, tmp_path: Path, database_url: str, artifact_store: str) -> None:
        self.tmp_path, self.database_url, self.artifact_store = tmp_path, database_url, artifact_store
        self.open: list[Store] = []

    def store(self, name: str) -> Store:
        store = Store(self.tmp_path / name, self.database_url, artifact_store=self.artifact_store)
        self.open.append(store)
        return store

    def close(self) -> None:
        for store in self.open:
            store.close()


@pytest.fixture
def hosts(tmp_path: Path, database_url: str, artifact_store: str) -> Iterator[Hosts]:
    made = Hosts(tmp_path, database_url, artifact_store)
    yield made
    made.close()


def register_tabular(store: Store, name: str = "tiny") -> VersionInfo:
    return store.registry.register_tabular(
        parse_manifest(tiny_manifest(name, weight_min=0.0)), ARTIFACT, REFERENCE
    )


def register_text(store: Store, directory: Path) -> VersionInfo:
    files = read_directory(directory, max_members=200, max_bytes=2**31)
    return store.registry.register_text(parse_manifest(text_manifest()), files)


def assert_tabular_predicts(store: Store) -> None:
    model = store.registry.load(store.registry.resolve("tiny", "1"))
    rows = FRAME[FEATURES].head(5)
    got = model.predict_encoded(model.encode(model.validate(rows.to_dict("records"))))
    np.testing.assert_allclose(got, PIPELINE.predict_proba(rows), rtol=1e-12)


def assert_text_predicts(store: Store, directory: Path) -> None:
    model = store.registry.load(store.registry.resolve("triage", "1"))
    probabilities = model.probabilities(model.validate([{"text": t} for t in TEXTS]))
    for text, row in zip(TEXTS, probabilities, strict=True):
        np.testing.assert_allclose(row, softmax(directory, text), rtol=0, atol=1e-6)


def stored_blobs(hosts: Hosts, store: Store) -> dict[str, int]:
    """Every blob in the shared store: its sha256 and how many rows or files hold it."""
    if hosts.artifact_store == "database":
        with store.engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT sha256, count(*) FROM artifact_parts GROUP BY sha256"))
            return {sha256: count for sha256, count in rows}
    root = hosts.tmp_path / "objects" / "sha256"
    return {p.name: 1 for p in root.rglob("*") if p.is_file()}


def tamper_blob(hosts: Hosts, store: Store, sha256: str) -> None:
    if hosts.artifact_store == "database":
        with store.engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE artifact_parts SET data = :data WHERE sha256 = :sha AND part = 0"),
                {"data": b"tampered", "sha": sha256},
            )
        return
    (hosts.tmp_path / "objects" / "sha256" / sha256[:2] / sha256).write_bytes(b"tampered")


# -- several hosts --------------------------------------------------------------------------------------
def test_a_version_registered_through_one_host_is_served_by_another(hosts: Hosts, tiny_dir: Path) -> None:
    a = hosts.store("a")
    tabular, text = register_tabular(a), register_text(a, tiny_dir)
    a.close()
    shutil.rmtree(hosts.tmp_path / "a")  # nothing of host A's on disk

    b = hosts.store("b")
    assert_tabular_predicts(b)
    assert_text_predicts(b, tiny_dir)
    assert not (hosts.tmp_path / "b" / "artifacts" / "sha256").exists(), "B's own disk stores nothing"
    cached = {p.name for p in (hosts.tmp_path / "b" / "artifact-cache" / "sha256").rglob("*") if p.is_file()}
    assert cached == {*tabular.artifact_files.values(), *text.artifact_files.values()}  # type: ignore[union-attr]

    shipped = b.registry.files(b.registry.resolve("tiny", "1"))
    assert set(shipped) == {"model.skops", "reference.parquet"}
    assert shipped["model.skops"] == ARTIFACT
    assert hashlib.sha256(shipped["reference.parquet"]).hexdigest() == tabular.reference_sha256
    pd.testing.assert_frame_equal(read_reference(shipped["reference.parquet"]), read_reference(REFERENCE))
    shipped = b.registry.files(b.registry.resolve("triage", "1"))
    listing = json.loads(shipped.pop("files.json"))
    assert shipped == model_files(tiny_dir)
    assert set(listing) == set(shipped)


def test_the_same_files_registered_twice_are_stored_once(hosts: Hosts) -> None:
    a = hosts.store("a")
    first = register_tabular(a)
    stored = stored_blobs(hosts, a)
    assert set(stored) == set(first.artifact_files.values())  # type: ignore[union-attr]
    second = register_tabular(a, "twin")
    assert second.artifact_files == first.artifact_files
    assert stored_blobs(hosts, a) == stored


def test_a_big_file_is_stored_in_parts_and_read_back(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blob_db, "CHUNK_BYTES", 1000)
    store = Store(tmp_path / "a", database_url, artifact_store="database")
    try:
        data = np.random.default_rng(0).bytes(4500)
        sha256 = store.registry.artifacts.put_bytes(data)
        with store.engine.connect() as connection:
            parts = connection.execute(
                sa.text("SELECT part, length(data) FROM artifact_parts WHERE sha256 = :s ORDER BY part"),
                {"s": sha256},
            ).all()
        assert [tuple(p) for p in parts] == [(0, 1000), (1, 1000), (2, 1000), (3, 1000), (4, 500)]
        assert store.registry.artifacts.cache.read(sha256) == data
    finally:
        store.close()


# -- verified on every load -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.skops", "reference.parquet"])
def test_a_tampered_blob_in_the_store_is_an_integrity_error(hosts: Hosts, name: str) -> None:
    a = hosts.store("a")
    info = register_tabular(a)
    tamper_blob(hosts, a, info.artifact_files[name])  # type: ignore[index]
    b = hosts.store("b")
    with pytest.raises(IntegrityError) as caught:
        b.registry.load(b.registry.resolve("tiny", "1"))
    assert str(hosts.tmp_path) not in caught.value.detail, "no paths in messages"
    with pytest.raises(IntegrityError):
        b.registry.files(b.registry.resolve("tiny", "1"))
    assert not cache_file(hosts.tmp_path / "b", info.artifact_files[name]).exists(), "nothing unverified kept"  # type: ignore[index]
    assert not any(p.name.startswith(".tmp-") for p in (hosts.tmp_path / "b").rglob("*"))


def test_a_tampered_text_blob_in_the_store_is_never_served(hosts: Hosts, tiny_dir: Path) -> None:
    a = hosts.store("a")
    info = register_text(a, tiny_dir)
    tamper_blob(hosts, a, info.artifact_files["model.safetensors"])  # type: ignore[index]
    with pytest.raises(IntegrityError):
        hosts.store("b").registry.load(info)


def cache_file(host: Path, sha256: str) -> Path:
    return host / "artifact-cache" / "sha256" / sha256[:2] / sha256


def test_a_tampered_cache_file_is_fetched_again(hosts: Hosts, tiny_dir: Path) -> None:
    a = hosts.store("a")
    tabular, text = register_tabular(a), register_text(a, tiny_dir)
    b = hosts.store("b")
    assert_tabular_predicts(b)
    assert_text_predicts(b, tiny_dir)
    b.close()
    tampered = [
        cache_file(hosts.tmp_path / "b", tabular.artifact_files["model.skops"]),  # type: ignore[index]
        cache_file(hosts.tmp_path / "b", text.artifact_files["model.safetensors"]),  # type: ignore[index]
    ]
    originals = [path.read_bytes() for path in tampered]
    for path in tampered:
        path.write_bytes(b"tampered in the cache")  # the text directory's hard link sees it too
    b = hosts.store("b")  # a cold model cache on the same host
    assert_tabular_predicts(b)
    assert_text_predicts(b, tiny_dir)
    assert [path.read_bytes() for path in tampered] == originals, "fetched again from the store"


# -- legacy versions, configuration -----------------------------------------------------------------------
def test_a_legacy_version_loads_from_its_directory(tmp_path: Path, database_url: str, tiny_dir: Path) -> None:
    """A version registered before content addressing (``artifact_files`` null) loads from
    ``<data_dir>/artifacts/<artifact_dir>`` as it did."""
    store = Store(tmp_path / "a", database_url)
    try:
        originals = {}
        for info in (register_tabular(store), register_text(store, tiny_dir)):
            files = store.registry.files(info)
            originals[info.name] = files
            dir_id = store.registry.artifacts.write(files)
            with store.engine.begin() as connection:
                connection.execute(
                    sa.text(
                        "UPDATE model_versions SET artifact_files = NULL, artifact_dir = :d WHERE id = :i"
                    ),
                    {"d": dir_id, "i": info.id},
                )
        shutil.rmtree(tmp_path / "a" / "artifacts" / "sha256")  # no blob to fall back on
        shutil.rmtree(tmp_path / "a" / "artifact-cache")
    finally:
        store.close()
    legacy = Store(tmp_path / "a", database_url)
    try:
        for name in ("tiny", "triage"):
            info = legacy.registry.resolve(name, "1")
            assert info.artifact_files is None and info.artifact_dir
            assert legacy.registry.files(info) == originals[name]
        assert_tabular_predicts(legacy)
        assert_text_predicts(legacy, tiny_dir)
    finally:
        legacy.close()


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("nosuch://bucket/prefix", "Protocol not known: nosuch"),
        ("/var/lib/candor", "not empty, 'database' or a URL"),
        pytest.param(
            "s3://bucket/prefix",
            "needs a driver that is not installed",
            marks=pytest.mark.skipif(bool(importlib.util.find_spec("s3fs")), reason="s3fs is installed"),
        ),
    ],
)
def test_an_unusable_artifact_store_fails_at_start_up(tmp_path: Path, setting: str, words: str) -> None:
    with pytest.raises(ArtifactStoreConfigError, match=words):
        Store(tmp_path, f"sqlite:///{tmp_path / 'candor.db'}", artifact_store=setting)
    assert not (tmp_path / "candor.db").exists(), "refused before the database is touched"


def test_the_app_reads_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from api.http.app import create_app

    objects = tmp_path / "objects"
    monkeypatch.setenv("CANDOR_ARTIFACT_STORE", objects.as_uri())
    app = create_app({"data_dir": tmp_path / "data"})
    store: Any = app.extensions["candor"].store
    try:
        info = register_tabular(store)
        assert {p.name for p in objects.rglob("*") if p.is_file()} == set(info.artifact_files.values())  # type: ignore[union-attr]
    finally:
        store.close()
    monkeypatch.setenv("CANDOR_ARTIFACT_STORE", "nosuch://x")
    with pytest.raises(ArtifactStoreConfigError):
        create_app({"data_dir": tmp_path / "data"})


def test_the_command_line_and_gunicorn_refuse_an_unusable_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.ops.cli import main

    monkeypatch.setenv("CANDOR_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CANDOR_ARTIFACT_STORE", "nosuch://bucket")
    assert main(["models", "list"]) == 2
    assert "Protocol not known: nosuch" in capsys.readouterr().err
    env = server_env(tmp_path / "data", free_port(), CANDOR_ARTIFACT_STORE="nosuch://bucket")
    started = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "api/ops/gunicorn_conf.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    output = (started.stdout + started.stderr).decode()
    assert started.returncode != 0
    assert "Error: CANDOR_ARTIFACT_STORE='nosuch://bucket': Protocol not known: nosuch" in output
    assert "Traceback" not in output


def test_a_large_file_is_stored_and_fetched_a_part_at_a_time(tmp_path: Path, database_url: str) -> None:
    """40 MiB through the database store: Python never holds more than a few 4 MiB parts at once."""
    big = tmp_path / "weights.safetensors"
    digest, rng = hashlib.sha256(), np.random.default_rng(0)
    with big.open("wb") as sink:
        for _ in range(10):
            part = rng.bytes(4 * 1024 * 1024)
            digest.update(part)
            sink.write(part)
    sha256 = digest.hexdigest()
    writer = Store(tmp_path / "a", database_url, artifact_store="database")
    reader = Store(tmp_path / "b", database_url, artifact_store="database")
    try:
        tracemalloc.start()
        writer.registry.artifacts.put_file(big, sha256)
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        fetched = reader.registry.artifacts.cache.path(sha256)
        fetch_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert fetched.read_bytes() == big.read_bytes()
        with writer.engine.connect() as connection:
            count = "SELECT count(*) FROM artifact_parts WHERE sha256 = :s"
            assert connection.execute(sa.text(count), {"s": sha256}).scalar() == 10
        print(f"peak traced memory: put {put_peak / 2**20:.1f} MiB, fetch {fetch_peak / 2**20:.1f} MiB")
        assert put_peak < 16 * 2**20 and fetch_peak < 16 * 2**20
    finally:
        tracemalloc.stop()
        writer.close()
        reader.close()


def test_migration_0009_is_all_or_nothing(tmp_path: Path, database_url: str) -> None:
    """A failure part way (here: the blob table already exists) leaves the database at 0008, unchanged."""
    from alembic import command
    from alembic.config import Config

    from model_store.db import make_engine
    from model_store.migrate import upgrade_to_head

    engine = make_engine(database_url)
    try:
        config = Config()
        config.set_main_option("script_location", "model_store:migrations")
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0008")
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE artifact_parts (sha256 VARCHAR(64))"))
        with pytest.raises(sa.exc.DBAPIError):
            upgrade_to_head(engine)
        columns = {column["name"] for column in sa.inspect(engine).get_columns("model_versions")}
        assert "artifact_files" not in columns
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0008"
        with engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE artifact_parts"))
        upgrade_to_head(engine)
        columns = {column["name"] for column in sa.inspect(engine).get_columns("model_versions")}
        assert "artifact_files" in columns
    finally:
        engine.dispose()


def test_hosts_storing_the_same_file_at_once_all_succeed(tmp_path: Path, database_url: str) -> None:
    """Hosts registering the same weights at the same moment: one stores the parts, the others find them."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    data = np.random.default_rng(1).bytes(9 * 1024 * 1024)
    stores = [Store(tmp_path / f"h{i}", database_url, artifact_store="database") for i in range(3)]
    barrier = Barrier(len(stores))

    def put(store: Store) -> str:
        barrier.wait()
        return store.registry.artifacts.put_bytes(data)

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            digests = set(pool.map(put, stores))
        assert digests == {hashlib.sha256(data).hexdigest()}
        with stores[0].engine.connect() as connection:
            parts = (
                connection.execute(sa.text("SELECT part FROM artifact_parts ORDER BY part")).scalars().all()
            )
        assert parts == [0, 1, 2]
        assert stores[1].registry.artifacts.cache.read(digests.pop()) == data
    finally:
        for store in stores:
            store.close()

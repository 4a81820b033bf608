"""Hostile archives (issue 18): uploads that would cost far more memory, CPU or disk than their size, and
member names the file system cannot hold. Each is a 422 naming ``artifact``, found from the zip central
directory or the tar headers before anything is expanded, and no upload costs memory beyond a few chunks.
The archives are generated here, a few hundred kilobytes each; nothing large is committed."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from stored_files import artifact_entries
from test_hostile_uploads import assert_refused
from test_store_safety import _PIPELINE, _REFERENCE, safe_manifest

from api.http.app import create_app
from model_store.safe_load import dump_skops

MANIFEST = json.dumps(
    {"name": "triage", "task": "text_classification", "classes": ["routine", "urgent"], "max_tokens": 64}
)
MODEL = {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"weights"}
"""Names enough for the cheap checks; none of these uploads may get as far as loading them."""
MB = 1024 * 1024
ZEROS = b"\0" * MB


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    made: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        data = tmp_path / f"data-{len(made)}"
        made.append(create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'c.db'}", **overrides}))
        return made[-1]

    yield build
    for application in made:
        application.extensions["candor"].store.close()


def post(app: Flask, artifact: bytes, manifest: str = MANIFEST, **parts: Any) -> Any:
    token = app.extensions["candor"].store.keys.create("writer", ["models:write"])[0]
    name = json.loads(manifest)["name"]
    return app.test_client().post(
        f"/v1/models/{name}/versions",
        data={"manifest": manifest, "artifact": (io.BytesIO(artifact), "model"), **parts},
        headers={"Authorization": f"Bearer {token}"},
        content_type="multipart/form-data",
    )


def refused(response: Any, words: str) -> None:
    """A 422 problem naming ``artifact`` whose message says ``words``."""
    assert_refused(response, "artifact", words)


def stored(app: Flask) -> list[Path]:
    return [Path(p) for p in artifact_entries(Path(app.extensions["candor"].settings.data_dir))]


def traced_peak(call: Callable[[], Any]) -> tuple[Any, int]:
    """What ``call`` returns and the most memory Python held during it beyond what it held before."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- builders ----------------------------------------------------------------------------------------------
def zip_archive(files: dict[str, bytes], zeros: dict[str, int] | None = None, dirs: int = 0) -> bytes:
    """A deflated zip of ``files``, members of ``zeros[name]`` zero bytes written a chunk at a time, and
    ``dirs`` directory entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, size in (zeros or {}).items():
            with archive.open(name, "w") as member:
                for start in range(0, size, MB):
                    member.write(ZEROS[: min(MB, size - start)])
        for index in range(dirs):
            archive.writestr(f"d{index}/", b"")
    return buffer.getvalue()


def tar_gz(files: dict[str, bytes], dirs: int = 0, raw: bytes = b"") -> bytes:
    """A gzipped tar of ``files``, ``dirs`` directory entries, and ``raw`` blocks written before them."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as stream:
        stream.write(raw)
        with tarfile.open(fileobj=stream, mode="w|") as archive:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            for index in range(dirs):
                info = tarfile.TarInfo(f"d{index}")
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
    return buffer.getvalue()


def gnu_long_name_header(size: int) -> Iterator[bytes]:
    """A GNU long-name entry declaring a name of ``size`` bytes (``tarfile`` reads such a name whole)."""
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, size
    yield info.tobuf(tarfile.GNU_FORMAT)
    for start in range(0, size, MB):
        yield ZEROS[: min(MB, size - start)]


def tar_gz_with_long_name(size: int) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as stream:
        for block in gnu_long_name_header(size):
            stream.write(block)
    return buffer.getvalue() + tar_gz(MODEL)


# -- compression bombs: refused before expansion, memory bounded -------------------------------------------
def test_a_zip_bomb_is_refused_from_its_central_directory_without_expanding(make_app: Any) -> None:
    app = make_app()  # the default limits: 2 GB expanded, 100 times the upload
    noise = os.urandom(600_000)  # past werkzeug's 500 kB in memory: the upload is read from a temporary file
    bomb = zip_archive({**MODEL, "noise.txt": noise}, {"zeros.safetensors": 300 * MB})
    assert len(bomb) < 1_000_000
    response, peak = traced_peak(lambda: post(app, bomb))
    assert peak < 16 * MB, f"{peak / MB:.0f} MB traced for a {len(bomb) // 1024} kB upload"
    refused(response, "expands to more than 100 times its size")
    assert stored(app) == []


RSS_PROBE = """
import resource, sys
sys.path.insert(0, "tests")
import test_hostile_archives as t
app = t.create_app({"data_dir": sys.argv[1], "database_url": "sqlite:///" + sys.argv[1] + "/c.db"})
bomb = t.zip_archive(t.MODEL, {"zeros.safetensors": 300 * t.MB})
t.post(app, b"not an archive")  # every code path of a refusal warmed up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
response = t.post(app, bomb)
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(response.status_code, growth // 1024)
"""


def test_a_zip_bomb_leaves_the_peak_resident_size_where_it_was(tmp_path: Path) -> None:
    """The same bomb in a fresh process, measured by the kernel (C allocations included): ru_maxrss."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    status, growth_mb = done.stdout.split()[-2:]
    assert status == "422", done.stderr[-2000:]
    assert int(growth_mb) < 32, f"peak resident size grew by {growth_mb} MB"


def test_an_allowed_expansion_is_streamed_to_disk_not_held_in_memory(make_app: Any) -> None:
    """With the ratio limit lifted the 200 MB member is written, a chunk at a time, then the upload is
    refused for its config (auto_map): memory stays at a few chunks and nothing is left behind."""
    app = make_app(max_archive_ratio=1_000_000)
    config = json.dumps({"auto_map": {"AutoModel": "evil.Model"}}).encode()
    upload = zip_archive({**MODEL, "config.json": config}, {"zeros.safetensors": 200 * MB})
    response, peak = traced_peak(lambda: post(app, upload))
    assert peak < 16 * MB, f"{peak / MB:.0f} MB traced while expanding 200 MB"
    refused(response, "auto_map")
    assert stored(app) == []


def test_a_tar_long_name_bomb_is_refused_without_reading_the_name(make_app: Any) -> None:
    app = make_app(max_archive_ratio=1_000_000)
    bomb = tar_gz_with_long_name(100 * MB)
    assert len(bomb) < 200_000
    response, peak = traced_peak(lambda: post(app, bomb))
    assert peak < 16 * MB, f"{peak / MB:.0f} MB traced for a {len(bomb) // 1024} kB upload"
    refused(response, "tar header declares more than 1 MiB")


def test_a_tar_gz_bomb_is_refused_by_its_ratio(make_app: Any) -> None:
    app = make_app()
    bomb = tar_gz({**MODEL, "zeros.safetensors": bytes(50 * MB)})
    response, peak = traced_peak(lambda: post(app, bomb))
    assert peak < 16 * MB
    refused(response, "expands to more than 100 times its size")


# -- directory entries count -------------------------------------------------------------------------------
@pytest.mark.parametrize("build", [zip_archive, tar_gz], ids=["zip", "tar.gz"])
def test_directory_entries_count_against_the_member_limit(make_app: Any, build: Any) -> None:
    app = make_app(max_archive_members=50)
    refused(post(app, build(MODEL, dirs=60)), "more than 50 entries (files and directories)")


def test_two_hundred_thousand_directories_are_refused_at_the_limit(make_app: Any) -> None:
    """The issue's 447 kB upload of 200,000 directory entries: refused after the 201st header is read."""
    app = make_app()
    upload = tar_gz(MODEL, dirs=20_000)
    response, peak = traced_peak(lambda: post(app, upload))
    assert peak < 16 * MB
    refused(response, "more than 200 entries")


# -- member names ------------------------------------------------------------------------------------------
HOSTILE_NAMES = {
    "long-name": ({**MODEL, "a" * 300 + ".json": b"{}"}, "longer than 255 bytes"),
    "long-path": ({**MODEL, "/".join(["b" * 200] * 8) + "/x": b"{}"}, "path longer than 1024 bytes"),
    "deep": ({**MODEL, "d/" * 2_100 + "x": b"{}"}, "nested deeper than 16"),
    "file-and-dir": ({**MODEL, "model.safetensors/inner.txt": b"x"}, "both a file and a directory"),
    "control-character": ({**MODEL, "a\nb.json": b"{}"}, "control character"),
}


@pytest.mark.parametrize("kind", HOSTILE_NAMES)
@pytest.mark.parametrize("build", [zip_archive, tar_gz], ids=["zip", "tar.gz"])
def test_hostile_member_names_are_a_422_naming_artifact(make_app: Any, build: Any, kind: str) -> None:
    files, words = HOSTILE_NAMES[kind]
    app = make_app()
    refused(post(app, build(files)), words)
    assert stored(app) == []


def test_a_directory_entry_that_is_also_a_file_is_refused(make_app: Any) -> None:
    buffer = io.BytesIO(zip_archive(MODEL))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("tokenizer.json/", b"")
    refused(post(make_app(), buffer.getvalue()), "both a file and a directory")


def test_a_member_twice_is_refused(make_app: Any) -> None:
    twice = io.BytesIO()
    with tarfile.open(fileobj=twice, mode="w") as archive:
        for name, data in [*MODEL.items(), ("config.json", b'{"other": 1}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    refused(post(make_app(), twice.getvalue()), "appears twice")


def tar_of(files: dict[str, bytes], compression: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "", "gz", "bz2", "xz"])
def test_every_format_streams_members_larger_than_a_chunk(make_app: Any, kind: str) -> None:
    """5 MB of random weights pass through every supported format to the check after unpacking (auto_map)."""
    config = json.dumps({"auto_map": {"AutoModel": "evil.Model"}}).encode()
    files = {**MODEL, "config.json": config, "model.safetensors": os.urandom(5 * MB)}
    app = make_app()
    refused(post(app, zip_archive(files) if kind == "zip" else tar_of(files, kind)), "auto_map")
    assert stored(app) == []


@pytest.mark.parametrize("root", [".", "./"])
def test_an_archive_of_dot_passes_the_name_checks(make_app: Any, root: str) -> None:
    """``tar czf model.tgz -C dir .`` writes a ``.`` directory entry and ``./config.json``: not hostile (these
    fake weights then fail to load, which is the next check)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(root)
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
        for name, data in MODEL.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    refused(post(make_app(), buffer.getvalue()), "transformers cannot load it")


# -- skops: schema.json ------------------------------------------------------------------------------------
def skops_with_padded_schema(padding: int) -> tuple[bytes, bytes]:
    """A valid skops file of the tiny pipeline whose schema.json ends in ``padding`` spaces (still valid
    JSON), deflated; and its reference rows."""
    original = zipfile.ZipFile(io.BytesIO(dump_skops(_PIPELINE)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in original.infolist():
            with archive.open(info.filename, "w") as member:
                member.write(original.read(info))
                if info.filename == "schema.json":
                    for start in range(0, padding, MB):
                        member.write(b" " * min(MB, padding - start))
    return buffer.getvalue(), _REFERENCE


def test_a_huge_skops_schema_is_refused_before_skops_reads_it(make_app: Any) -> None:
    app = make_app()
    artifact, reference = skops_with_padded_schema(64 * MB)
    assert len(artifact) < 200_000
    parts = {"reference": (io.BytesIO(reference), "reference.parquet")}
    response, peak = traced_peak(lambda: post(app, artifact, json.dumps(safe_manifest()), **parts))
    assert peak < 16 * MB, f"{peak / MB:.0f} MB traced"
    refused(response, "schema.json is larger than 16777216 bytes")


def test_a_skops_schema_within_the_cap_is_accepted(make_app: Any) -> None:
    artifact, reference = skops_with_padded_schema(1_000)
    parts = {"reference": (io.BytesIO(reference), "reference.parquet")}
    response = post(make_app(), artifact, json.dumps(safe_manifest()), **parts)
    assert response.status_code == 201, response.get_json()

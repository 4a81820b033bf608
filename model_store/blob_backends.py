"""Where a version's files are stored, each once under its sha256: a directory under the data dir (one host),
the database (``blob_db``) or an object store reached through an fsspec URL (``s3://``, ``gs://``, ``file://``).

Credentials for an object store come only from the environment or fsspec's own configuration: the URL setting
names a place, never a secret, and nothing about it is written to the database.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from model_store.errors import IntegrityError

CHUNK_BYTES = 4 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ArtifactStoreConfigError(ValueError):
    """``CANDOR_ARTIFACT_STORE`` names no usable store (unknown protocol, missing driver)."""


class BlobMissing(IntegrityError):
    """The backend holds no blob under this sha256."""

    def __init__(self) -> None:
        super().__init__("A stored artifact file is missing.")


def mismatch() -> IntegrityError:
    return IntegrityError("A stored artifact no longer matches the sha256 recorded at registration.")


def blob_key(sha256: str) -> str:
    """``sha256/ab/<sha256>``: the relative name of a blob in a directory or object store."""
    if not _SHA256.fullmatch(sha256):
        raise IntegrityError("A stored artifact digest is malformed.")
    return f"sha256/{sha256[:2]}/{sha256}"


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def copy_verified(chunks: Iterable[bytes], sink: Any, sha256: str) -> None:
    """Write ``chunks`` to ``sink``; ``IntegrityError`` when they do not hash to ``sha256``."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        sink.write(chunk)
    if digest.hexdigest() != sha256:
        raise mismatch()


class BlobBackend(Protocol):
    def exists(self, sha256: str) -> bool: ...

    def put(self, sha256: str, chunks: Iterable[bytes]) -> None:
        """Store the bytes of ``chunks`` under ``sha256`` atomically (refused if they hash otherwise); a blob
        already stored is kept as it is."""

    def chunks(self, sha256: str) -> Iterator[bytes]:
        """The stored bytes, a part at a time (``BlobMissing`` if absent); the caller verifies them."""

    def local_path(self, sha256: str) -> Path | None:
        """The blob's own file when the backend is this host's disk (no cache copy needed), else None."""


class DirectoryBackend:
    """``<data_dir>/artifacts/sha256/ab/<sha256>``: a single host's store, and its own cache."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: str) -> Path:
        return self.root / blob_key(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, sha256: str, chunks: Iterable[bytes]) -> None:
        target = self.path(sha256)
        if target.is_file():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with temp.open("wb") as sink:
                copy_verified(chunks, sink, sha256)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def chunks(self, sha256: str) -> Iterator[bytes]:
        try:
            yield from file_chunks(self.path(sha256))
        except FileNotFoundError as exc:
            raise BlobMissing() from exc

    def local_path(self, sha256: str) -> Path | None:
        return self.path(sha256)


class FsspecBackend:
    """Blobs under an fsspec URL; written to a temporary name and moved into place."""

    def __init__(self, url: str) -> None:
        import fsspec

        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except ImportError as exc:
            raise ArtifactStoreConfigError(
                f"CANDOR_ARTIFACT_STORE={url!r} needs a driver that is not installed: {exc}"
            ) from exc
        except ValueError as exc:
            raise ArtifactStoreConfigError(f"CANDOR_ARTIFACT_STORE={url!r}: {exc}") from exc
        self.root = str(self.root).rstrip("/")
        if "file" in _protocols(self.fs):
            self.fs.makedirs(self.root, exist_ok=True)

    def key(self, sha256: str) -> str:
        return f"{self.root}/{blob_key(sha256)}"

    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self.key(sha256)))

    def put(self, sha256: str, chunks: Iterable[bytes]) -> None:
        target = self.key(sha256)
        if self.fs.exists(target):
            return
        temp = f"{self.root}/incoming/{uuid.uuid4().hex}"
        self.fs.makedirs(f"{self.root}/incoming", exist_ok=True)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self.fs.open(temp, "wb") as sink:
                copy_verified(chunks, sink, sha256)
            self.fs.mv(temp, target)
        finally:
            if self.fs.exists(temp):
                self.fs.rm(temp)

    def chunks(self, sha256: str) -> Iterator[bytes]:
        try:
            with self.fs.open(self.key(sha256), "rb") as handle:
                while chunk := handle.read(CHUNK_BYTES):
                    yield chunk
        except FileNotFoundError as exc:
            raise BlobMissing() from exc

    def local_path(self, sha256: str) -> Path | None:
        return None


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def check_setting(setting: str) -> None:
    """Refuse a value that is neither empty, ``database`` nor an fsspec URL (a bare path is ambiguous)."""
    if setting and setting != "database" and "://" not in setting:
        raise ArtifactStoreConfigError(
            f"CANDOR_ARTIFACT_STORE={setting!r} is not empty, 'database' or a URL such as file:///dir or "
            "s3://bucket/prefix"
        )

"""A version's files: blobs named by their sha256 in the configured store (``blob_backends``), read through
this host's cache (``blob_cache``); versions registered before that are directories under
``<data_dir>/artifacts/<artifact_dir>``, read in place. Every file is verified against its sha256 on each
load."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from model_store.blob_backends import (
    BlobBackend,
    DirectoryBackend,
    FsspecBackend,
    check_setting,
    file_chunks,
)
from model_store.blob_cache import BlobCache
from model_store.errors import IntegrityError

ARTIFACT_FILE = "model.skops"
REFERENCE_FILE = "reference.parquet"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_backend(setting: str, data_dir: Path, sessions: sessionmaker[Session] | None) -> BlobBackend:
    """The store ``CANDOR_ARTIFACT_STORE`` names: empty, ``database`` or an fsspec URL; a value that names
    no usable store is an ``ArtifactStoreConfigError`` now, not at the first load."""
    check_setting(setting)
    if not setting:  # the directory is made when the store opens
        return DirectoryBackend(data_dir / "artifacts")
    if setting == "database":
        from model_store.blob_db import DatabaseBackend

        if sessions is None:
            raise ValueError("the database artifact store needs the store's sessions")
        return DatabaseBackend(sessions)
    return FsspecBackend(setting)


def check_artifact_store(setting: str) -> None:
    """``ArtifactStoreConfigError`` when ``setting`` names no usable store (gunicorn's master checks once,
    before any worker starts)."""
    if setting != "database":
        open_backend(setting, Path("."), None)


class ArtifactStore:
    """Content-addressed blobs in ``backend`` (default: ``<data_dir>/artifacts/sha256``), cached under
    ``<data_dir>/artifact-cache``; legacy version directories under ``<data_dir>/artifacts``, named by an
    opaque id (never by user input)."""

    def __init__(self, root: Path, backend: BlobBackend | None = None) -> None:
        self.root = root / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)
        self.backend = backend if backend is not None else DirectoryBackend(self.root)
        self.cache = BlobCache(root / "artifact-cache", self.backend)
        self.cache.root.mkdir(parents=True, exist_ok=True)

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` (once: a blob already stored is kept); its sha256."""
        sha256 = sha256_bytes(data)
        self.backend.put(sha256, [data])
        return sha256

    def put_file(self, path: Path, sha256: str) -> None:
        """Store a file expected to hash to ``sha256`` (refused with ``IntegrityError`` if it does not)."""
        self.backend.put(sha256, file_chunks(path))

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty directory on this host, removed afterwards (a text model is checked there)."""
        staging = self.cache.root / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def write(self, files: dict[str, bytes]) -> str:
        """A version directory of the layout before content addressing (what versions registered before
        migration 0009 have), written atomically; its id."""
        dir_id = uuid.uuid4().hex
        staging = self.root / f".staging-{dir_id}"
        try:
            for name, data in files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            staging.rename(self.root / dir_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dir_id

    def path(self, dir_id: str) -> Path:
        if not dir_id.isalnum():
            raise IntegrityError("Stored artifact directory id is malformed.")
        return self.root / dir_id

    def read_verified(self, dir_id: str, name: str, sha256: str) -> bytes:
        """The file's bytes, or ``IntegrityError`` when they no longer hash to ``sha256``; a version without
        a directory (``dir_id`` empty) is read from the blob store by ``sha256``."""
        if not dir_id:
            return self.cache.read(sha256)
        try:
            data = (self.path(dir_id) / name).read_bytes()
        except FileNotFoundError as exc:
            raise IntegrityError("A stored artifact file is missing.") from exc
        if sha256_bytes(data) != sha256:
            raise IntegrityError("A stored artifact no longer matches the sha256 recorded at registration.")
        return data

    def verify(self, dir_id: str, name: str, sha256: str) -> None:
        """Like ``read_verified``, hashing a chunk at a time (model weights need not fit in memory)."""
        digest = hashlib.sha256()
        try:
            with (self.path(dir_id) / name).open("rb") as handle:
                while chunk := handle.read(1024 * 1024):
                    digest.update(chunk)
        except FileNotFoundError as exc:
            raise IntegrityError("A stored artifact file is missing.") from exc
        if digest.hexdigest() != sha256:
            raise IntegrityError("A stored artifact no longer matches the sha256 recorded at registration.")

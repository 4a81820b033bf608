"""Artifact files on disk: one directory per version, every file's sha256 recorded and verified."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from model_store.errors import IntegrityError

ARTIFACT_FILE = "model.skops"
REFERENCE_FILE = "reference.parquet"
T = TypeVar("T")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Directories under ``<data_dir>/artifacts``, named by an opaque id (never by user input)."""

    def __init__(self, root: Path) -> None:
        self.root = root / "artifacts"
        self.root.mkdir(parents=True, exist_ok=True)

    def write(self, files: dict[str, bytes]) -> str:
        """Write a new version directory of in-memory files atomically; return its id."""

        def fill(staging: Path) -> None:
            for name, data in files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

        return self.stage(fill)[0]

    def stage(self, fill: Callable[[Path], T]) -> tuple[str, T]:
        """A new version directory filled by ``fill`` in a staging directory, then renamed into place (removed
        if ``fill`` raises); its id and what ``fill`` returned."""
        dir_id = uuid.uuid4().hex
        staging = self.root / f".staging-{dir_id}"
        staging.mkdir()
        try:
            result = fill(staging)
            staging.rename(self.root / dir_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return dir_id, result

    def remove(self, dir_id: str) -> None:
        shutil.rmtree(self.path(dir_id), ignore_errors=True)

    def path(self, dir_id: str) -> Path:
        if not dir_id.isalnum():
            raise IntegrityError("Stored artifact directory id is malformed.")
        return self.root / dir_id

    def read_verified(self, dir_id: str, name: str, sha256: str) -> bytes:
        """The file's bytes, or ``IntegrityError`` when they no longer hash to ``sha256``."""
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

"""This host's copies of stored blobs (``<data_dir>/artifact-cache``), verified on every read.

A blob fetched from the backend is written to a temporary file and renamed into place once it hashes to its
name; a cached copy that no longer does is fetched again, and a backend copy that does not is an
``IntegrityError``. A backend on this host's disk is read in place (it is its own cache). Model directories
(text models) are materialised here from the blobs, as hard links when the filesystem allows.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path, PurePosixPath

from model_store.blob_backends import BlobBackend, blob_key, copy_verified, file_chunks, mismatch
from model_store.errors import IntegrityError


def file_sha256(path: Path) -> str | None:
    """The file's sha256, hashed a chunk at a time; None when it is missing."""
    digest = hashlib.sha256()
    try:
        for chunk in file_chunks(path):
            digest.update(chunk)
    except (FileNotFoundError, IsADirectoryError):
        return None
    return digest.hexdigest()


class BlobCache:
    def __init__(self, root: Path, backend: BlobBackend) -> None:
        self.root = root
        self.backend = backend

    def path(self, sha256: str) -> Path:
        """A local file holding the blob, verified now."""
        local = self.backend.local_path(sha256)
        if local is not None:
            found = file_sha256(local)
            if found is None:
                raise IntegrityError("A stored artifact file is missing.")
            if found != sha256:
                raise mismatch()
            return local
        target = self.root / blob_key(sha256)
        if file_sha256(target) != sha256:
            self._fetch(sha256, target)
        return target

    def read(self, sha256: str) -> bytes:
        """The blob's bytes, verified (fetched again once if the cached copy no longer matches)."""
        local = self.backend.local_path(sha256)
        target = local if local is not None else self.root / blob_key(sha256)
        for attempt in range(2):
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                data = None
            if data is not None and hashlib.sha256(data).hexdigest() == sha256:
                return data
            if local is not None:
                raise mismatch() if data is not None else IntegrityError("A stored artifact file is missing.")
            if attempt == 0:
                self._fetch(sha256, target)
        raise mismatch()

    def _fetch(self, sha256: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            with temp.open("wb") as sink:
                copy_verified(self.backend.chunks(sha256), sink, sha256)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def directory(self, key: str, files: dict[str, str]) -> Path:
        """A directory holding exactly ``files`` ({relative path: sha256}), every file verified now;
        rebuilt from the blobs when it does not match."""
        blob_key(key)
        target = self.root / "versions" / key
        if target.is_dir():
            if _matches(target, files):
                return target
            _discard(target)
        staging = self.root / f".staging-{uuid.uuid4().hex}"
        try:
            for relative, sha256 in files.items():
                _link_or_copy(self.path(sha256), staging / _safe_relative(relative))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                staging.rename(target)
            except OSError:  # another process materialised it meanwhile
                if not _matches(target, files):
                    raise mismatch() from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _matches(directory: Path, files: dict[str, str]) -> bool:
    present = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir()}
    if present != set(files):
        return False
    return all(file_sha256(directory / relative) == sha256 for relative, sha256 in files.items())


def _discard(directory: Path) -> None:
    trash = directory.parent / f".trash-{uuid.uuid4().hex}"
    try:
        directory.rename(trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _safe_relative(relative: str) -> str:
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise IntegrityError("A stored artifact file name is malformed.")
    return path.as_posix()


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)

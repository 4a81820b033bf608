"""A registered version's files on this host, verified against the sha256 recorded at registration: by
content address (``artifact_files``) through the blob cache, or from a legacy version directory."""

from __future__ import annotations

import json
from pathlib import Path

from model_store.artifacts import REFERENCE_FILE, ArtifactStore
from model_store.errors import IntegrityError
from model_store.tabular.formats import artifact_format
from model_store.text.files import LISTING
from model_store.versions import VersionInfo


class VersionFiles:
    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    def read(self, info: VersionInfo, name: str) -> bytes:
        """One tabular file (the artifact or ``reference.parquet``), verified."""
        expected = {**_artifact_sha(info), REFERENCE_FILE: info.reference_sha256}[name]
        if info.artifact_files is None:
            return self.artifacts.read_verified(info.artifact_dir, name, expected)
        return self.artifacts.cache.read(self._recorded(info)[name])

    def text_directory(self, info: VersionInfo) -> Path:
        """A local directory holding exactly the text version's files, each verified now."""
        if info.flavour != "text":
            raise ValueError("only a text version is loaded from a directory")
        if info.artifact_files is None:
            self._verify_legacy_directory(info)
            return self.artifacts.path(info.artifact_dir)
        files = self._recorded(info)
        self._check_listing(files, self.artifacts.cache.read(files[LISTING]))
        return self.artifacts.cache.directory(info.artifact_sha256, files)

    def all(self, info: VersionInfo) -> dict[str, bytes]:
        """Every file of the version by relative path, each verified (the listing of a text version too)."""
        if info.artifact_files is not None:
            files = self._recorded(info)
            read = {path: self.artifacts.cache.read(sha256) for path, sha256 in files.items()}
            if info.flavour == "text":
                self._check_listing(files, read[LISTING])
            return read
        if info.flavour != "text":
            return {name: self.read(info, name) for name in (*_artifact_sha(info), REFERENCE_FILE)}
        index = self.artifacts.read_verified(info.artifact_dir, LISTING, info.artifact_sha256)
        listed = {
            path: self.artifacts.read_verified(info.artifact_dir, path, sha256)
            for path, sha256 in _parse(index).items()
        }
        return {**listed, LISTING: index}

    def _verify_legacy_directory(self, info: VersionInfo) -> None:
        """The listing must hash to the recorded sha256, and every file to its listed sha256; the
        directory must hold nothing else."""
        index = _parse(self.artifacts.read_verified(info.artifact_dir, LISTING, info.artifact_sha256))
        root = self.artifacts.path(info.artifact_dir)
        present = {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()} - {LISTING}
        if present != set(index):
            raise IntegrityError("The stored model directory holds files that were not registered.")
        for path, digest in index.items():
            self.artifacts.verify(info.artifact_dir, path, digest)

    @staticmethod
    def _recorded(info: VersionInfo) -> dict[str, str]:
        """``artifact_files``, which must agree with the version's recorded sha256s."""
        files = dict(info.artifact_files or {})
        if info.flavour == "text":
            agrees = files.get(LISTING) == info.artifact_sha256
        else:
            agrees = files == {**_artifact_sha(info), REFERENCE_FILE: info.reference_sha256}
        if not agrees:
            raise IntegrityError("A stored version's file list does not match its recorded sha256.")
        return files

    @staticmethod
    def _check_listing(files: dict[str, str], index: bytes) -> None:
        if _parse(index) != {path: sha256 for path, sha256 in files.items() if path != LISTING}:
            raise IntegrityError("A stored version's file list does not match its listing.")


def _artifact_sha(info: VersionInfo) -> dict[str, str]:
    """A tabular version's artifact by name and sha256 (empty for a format that stores none)."""
    name = artifact_format(info.manifest).file_name
    return {} if name is None else {name: info.artifact_sha256}


def _parse(index: bytes) -> dict[str, str]:
    try:
        parsed = json.loads(index)
    except ValueError as exc:
        raise IntegrityError("A stored model listing is not valid JSON.") from exc
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise IntegrityError("A stored model listing is malformed.")
    return parsed

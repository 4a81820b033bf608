"""A model version shipped to a job's Dask worker: the version's description and its files' bytes, sent once
per worker by the runner and verified and loaded there, so a worker needs neither the database nor the
artifact store (nor any credential for them)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

from model_store.artifacts import REFERENCE_FILE, sha256_bytes
from model_store.cache import LoadedModelCache
from model_store.errors import IntegrityError, VersionNotFound
from model_store.reference import read_reference
from model_store.tabular import TabularModel
from model_store.tabular.formats import artifact_format
from model_store.versions import VersionInfo


@dataclasses.dataclass(frozen=True)
class ShippedModel:
    info: VersionInfo
    files: dict[str, bytes]
    """Every file of the version by its path in the version (``ModelRegistry.files``)."""

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


class ShippedModels:
    """The one version a job's chunk is computed on, as a ``ModelSource`` for ``api.service.computing``;
    loaded once per worker process (``cache``) and verified against its recorded sha256s when loaded."""

    def __init__(self, shipped: ShippedModel, cache: LoadedModelCache[Any]) -> None:
        self.shipped = shipped
        self.cache = cache

    def resolve(self, name: str, version: str | int) -> VersionInfo:
        info = self.shipped.info
        if name != info.name or str(version) != str(info.version):
            raise VersionNotFound(name, str(version))
        return info

    def load(self, info: VersionInfo) -> Any:
        return self.cache.get_or_load(info.cache_key, lambda: load_shipped(self.shipped))


def _verified(files: dict[str, bytes], name: str, sha256: str) -> bytes:
    data = files.get(name)
    if data is None or sha256_bytes(data) != sha256:
        raise IntegrityError("A shipped model file does not match the sha256 recorded at registration.")
    return data


def load_shipped(shipped: ShippedModel) -> Any:
    """The loaded model: a tabular model from its bytes, a text model from a private copy of its directory."""
    info, files = shipped.info, shipped.files
    if info.flavour != "text":
        stored_as = artifact_format(info.manifest)
        artifact = None
        if stored_as.file_name is not None:
            artifact = _verified(files, stored_as.file_name, info.artifact_sha256)
        reference = _verified(files, REFERENCE_FILE, info.reference_sha256)
        estimator = stored_as.load(artifact, info.manifest, None)
        return TabularModel(info.manifest, estimator, read_reference(reference))
    from model_store.text.files import LISTING
    from model_store.text.members import member_path
    from model_store.text.model import TextModel

    index = json.loads(_verified(files, LISTING, info.artifact_sha256))
    if set(files) - {LISTING} != set(index):
        raise IntegrityError("The shipped model directory holds files that were not registered.")
    with tempfile.TemporaryDirectory(prefix="candor-model-") as temporary:
        directory = Path(temporary)
        for name, digest in index.items():
            target = directory / member_path(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_verified(files, name, digest))
        return TextModel(info.manifest, directory)  # loaded whole: the copy goes when it is built

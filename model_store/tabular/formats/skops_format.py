"""scikit-learn estimators and Pipelines stored with skops and the server's trusted-type allowlist."""

from __future__ import annotations

from typing import Any

from model_store.archive_limits import ArchiveLimits
from model_store.artifacts import ARTIFACT_FILE
from model_store.errors import InvalidInput
from model_store.manifest import Manifest
from model_store.safe_load import load_skops
from model_store.tabular.formats.base import ArtifactFormat


def load(artifact: bytes | None, manifest: Manifest, limits: ArchiveLimits | None) -> Any:
    if artifact is None:
        raise InvalidInput.field("artifact", "A skops model needs its artifact.")
    return load_skops(artifact, limits)


FORMAT = ArtifactFormat("skops", ARTIFACT_FILE, load)

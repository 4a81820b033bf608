"""What the rest of the service knows about one registered version (no ORM objects leak out)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Any

from model_store.manifest import Manifest, parse_manifest


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    version: int
    flavour: str
    manifest_data: dict[str, Any]
    artifact_dir: str
    artifact_sha256: str
    reference_sha256: str
    created_at: dt.datetime
    stages: tuple[str, ...] = ()
    artifact_files: dict[str, str] | None = None
    """Every file by relative path: its sha256 in the artifact store (None: a legacy version directory,
    ``artifact_dir``; empty for content-addressed versions)."""

    @functools.cached_property
    def manifest(self) -> Manifest:
        """The parsed manifest, parsed once per ``VersionInfo`` (a request's, a loaded model's)."""
        return parse_manifest(self.manifest_data)

    @property
    def cache_key(self) -> tuple[str, int, str]:
        return (self.name, self.version, self.artifact_sha256)

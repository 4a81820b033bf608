"""What every artifact format provides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from model_store.archive_limits import ArchiveLimits
from model_store.manifest import Manifest

Loader = Callable[[bytes | None, Manifest, ArchiveLimits | None], Any]
"""``(artifact, manifest, limits)`` -> the estimator; ``limits`` is given for an upload (None: a stored,
verified artifact) and ``artifact`` is None for a format without one (a remote predictor)."""


@dataclasses.dataclass(frozen=True)
class ArtifactFormat:
    name: str
    file_name: str | None
    """The artifact's name among the version's files; None when the format stores no artifact."""
    load: Loader

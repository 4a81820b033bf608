"""What every artifact format provides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from sklearn.base import BaseEstimator

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
    identity: Callable[[Manifest], bytes] | None = None
    """A format without an artifact: the bytes its version's ``artifact_sha256`` is the sha256 of (None:
    the empty string)."""


class LoadedEstimator(BaseEstimator):  # type: ignore[misc]
    """Base of a model that was trained elsewhere and only answers here: scikit-learn sees it as fitted
    (so it can end a Pipeline), and it is never refitted."""

    def fit(self, X: Any, y: Any = None) -> LoadedEstimator:
        raise TypeError("A loaded model is not refitted here.")

    def __sklearn_is_fitted__(self) -> bool:
        return True

"""The one Explanation envelope every kind of explanation is returned in."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from functools import cache
from importlib import metadata
from typing import Any

SCHEMA_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    name: str
    algorithm: str
    params: dict[str, Any]
    library_versions: dict[str, str]


@dataclasses.dataclass(frozen=True)
class TabularInputs:
    records: list[dict[str, Any]]
    encoded: Any  # numpy.ndarray, one row per record


@dataclasses.dataclass
class Explanation:
    kind: str
    model: ModelRef
    method: MethodInfo
    output: dict[str, Any]
    results: list[dict[str, Any]]
    quality: dict[str, Any]
    timing_ms: dict[str, float]
    id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))
    created_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    schema_version: str = SCHEMA_VERSION
    inputs: TabularInputs | None = dataclasses.field(default=None, repr=False, compare=False)
    """The validated rows and their encoding the explanation was computed on, for what runs after it in the
    same process (the OOD flags); never serialised."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schema_version": self.schema_version,
            "kind": self.kind,
            "created_at": self.created_at,
            "model": dataclasses.asdict(self.model),
            "method": dataclasses.asdict(self.method),
            "output": self.output,
            "results": self.results,
            "quality": self.quality,
            "timing_ms": self.timing_ms,
        }


@cache
def _installed_versions(distributions: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for name in distributions:
        try:
            out.append((name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            out.append((name, "unknown"))
    return tuple(out)


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named distributions (recorded with every explanation)."""
    return dict(_installed_versions(distributions))

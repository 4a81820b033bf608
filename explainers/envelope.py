"""The one Explanation envelope every kind of explanation is returned in."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time
from functools import cache
from importlib import metadata
from typing import Any

SCHEMA_VERSION = "1.0"


def new_explanation_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version and variant, 74 random bits.

    Time-ordered ids keep the audit trail's unique index on record ids append-mostly: a job's 1,000-record
    chunk lands on a few index pages instead of dirtying one random page per record (with random UUIDv4s
    the chunk's commit rewrote most of the index, a cost that grew with the trail)."""
    return new_explanation_ids(1)[0]


def new_explanation_ids(count: int) -> list[str]:
    """``count`` ids as ``new_explanation_id`` makes them, with one clock reading and one draw of random
    bytes for all (a job's chunk names its rows' records at once)."""
    millis = (time.time_ns() // 1_000_000) & ((1 << 48) - 1)
    drawn = secrets.token_bytes(10 * count)  # 80 bits an id, 74 used
    ids = []
    for start in range(0, 10 * count, 10):
        random = int.from_bytes(drawn[start : start + 10], "big")
        value = (
            millis << 80 | 0x7 << 76 | (random >> 62 & 0xFFF) << 64 | 0b10 << 62 | random & ((1 << 62) - 1)
        )
        text = f"{value:032x}"
        ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return ids


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


@dataclasses.dataclass
class Explanation:
    kind: str
    model: ModelRef
    method: MethodInfo
    output: dict[str, Any]
    results: list[dict[str, Any]]
    quality: dict[str, Any]
    timing_ms: dict[str, float]
    id: str = dataclasses.field(default_factory=new_explanation_id)
    created_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    schema_version: str = SCHEMA_VERSION

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

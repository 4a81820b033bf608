"""What an uploaded archive (a text model's zip or tar, a skops file) may cost, checked against the sizes it
declares before any member is expanded, then against the bytes it really expands to."""

from __future__ import annotations

import dataclasses
from typing import Any

from model_store.errors import UnsafeArtifact


@dataclasses.dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 200
    """Most entries, directories included."""
    max_bytes: int = 2 * 1024 * 1024 * 1024
    """Most bytes all members expand to."""
    max_ratio: int = 100
    """Most bytes all members expand to per byte of the archive."""
    max_skops_schema_bytes: int = 16 * 1024 * 1024
    """Largest ``schema.json`` in a skops file (skops parses it whole)."""
    max_onnx_bytes: int = 128 * 1024 * 1024
    """Largest ONNX model file (checked before it is parsed)."""
    max_onnx_nodes: int = 10_000
    """Most nodes an ONNX graph may have, subgraphs included."""
    max_onnx_tensor_bytes: int = 64 * 1024 * 1024
    """Largest tensor an ONNX graph may make, as shape inference sizes it (an open dimension counted for
    256 rows)."""

    @classmethod
    def from_settings(cls, settings: Any) -> ArchiveLimits:
        """The limits of a ``Settings`` (``CANDOR_MAX_ARCHIVE_*``, ``CANDOR_MAX_SKOPS_SCHEMA_BYTES``,
        ``CANDOR_MAX_ONNX_*``)."""
        return cls(
            settings.max_archive_members,
            settings.max_archive_bytes,
            settings.max_archive_ratio,
            settings.max_skops_schema_bytes,
            max_onnx_bytes=settings.max_onnx_bytes,
            max_onnx_nodes=settings.max_onnx_nodes,
            max_onnx_tensor_bytes=settings.max_onnx_tensor_bytes,
        )

    def expanded_cap(self, archive_bytes: int) -> int:
        """Most bytes an archive of ``archive_bytes`` may expand to."""
        return min(self.max_bytes, self.max_ratio * max(archive_bytes, 1))

    def check_expanded(self, expanded: int, archive_bytes: int) -> None:
        """``UnsafeArtifact`` when ``expanded`` bytes are more than an archive of its size may hold."""
        if expanded > self.max_bytes:
            raise UnsafeArtifact.field("artifact", f"more than {self.max_bytes} bytes uncompressed")
        if expanded > self.max_ratio * max(archive_bytes, 1):
            raise UnsafeArtifact.field(
                "artifact", f"expands to more than {self.max_ratio} times its size (a compression bomb?)"
            )

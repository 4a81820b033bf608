"""Cheap checks on an uploaded model file before any library parses it: its size and its first bytes."""

from __future__ import annotations

from model_store.archive_limits import ArchiveLimits
from model_store.errors import InvalidInput, UnsafeArtifact

PICKLE_OR_ARCHIVE = (
    (b"\x80", "a pickle"),
    (b"PK\x03\x04", "a zip archive (a skops or joblib file?)"),
    (b"\x1f\x8b", "a gzip file (a compressed joblib file?)"),
    (b"\xfd7zXZ", "an xz file (a compressed joblib file?)"),
    (b"]\x00\x00", "an lzma file (a compressed joblib file?)"),
    (b"BZh", "a bz2 file (a compressed joblib file?)"),
    (b"\x04\x22\x4d\x18", "an lz4 file (a compressed joblib file?)"),
    (b"(dp", "a protocol-0 pickle"),
    (b"(lp", "a protocol-0 pickle"),
    (b"ccopy_reg", "a protocol-0 pickle"),
    (b"c__builtin__", "a protocol-0 pickle"),
)


def checked_bytes(artifact: bytes | None, limits: ArchiveLimits | None, what: str) -> bytes:
    """``artifact`` when it is present and within ``limits.max_bytes`` (the most a model may expand to)."""
    if artifact is None:
        raise InvalidInput.field("artifact", f"{what} needs its model file.")
    if limits is not None and len(artifact) > limits.max_bytes:
        raise UnsafeArtifact.field("artifact", f"{what} file is larger than {limits.max_bytes} bytes")
    return artifact


def refuse_foreign(head: bytes, what: str) -> None:
    """``UnsafeArtifact`` naming a pickle or an archive by its first bytes."""
    found = [name for magic, name in PICKLE_OR_ARCHIVE if head.startswith(magic)]
    if _is_zlib(head):
        found.append("a zlib stream (a compressed joblib file?)")
    if found:
        raise UnsafeArtifact.field("artifact", f"not {what}: the file is {found[0]} (pickle is never loaded)")


def _is_zlib(head: bytes) -> bool:
    """A zlib header: deflate with a window of at most 32 KiB whose check bits are valid (RFC 1950)."""
    return (
        len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] * 256 + head[1]) % 31 == 0
    )

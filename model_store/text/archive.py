"""Unpack an uploaded zip or tar (gzip, bzip2 or xz) of a model directory into a staging directory.

Cheap checks first: the entry count, names and declared sizes are read from the zip central directory or the
tar headers and judged (``members.MemberTable``) with the file listing (``files.check_listing``) before any
member is expanded. Members are then streamed to disk in chunks, hashed on the way, under a running byte
budget, so no upload costs memory beyond a few chunks, whatever it expands to.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from model_store.archive_limits import ArchiveLimits
from model_store.errors import InvalidInput, UnsafeArtifact
from model_store.text.files import check_listing
from model_store.text.members import MAX_PATH_BYTES, MemberTable

CHUNK = 1024 * 1024
"""Bytes read and written at a time; also the largest read a tar header may ask for."""
XZ_MEMLIMIT = 64 * 1024 * 1024
"""Most memory the xz decompressor may use (``xz -9`` needs 65 MB; the default, ``-6``, 9 MB)."""
_HEADER_BYTES = 4096
"""Most tar stream bytes an entry adds to its data: its header, a long-name header and name, padding."""
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError)
Digests = dict[str, str]


def unpack_archive(source: BinaryIO, staging: Path, limits: ArchiveLimits) -> Digests:
    """Write the model files of the archive in seekable ``source`` under ``staging``; their sha256 by path."""
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    is_zip = zipfile.is_zipfile(source)
    source.seek(0)
    try:
        if is_zip:
            return _unpack_zip(source, size, staging, limits)
        return _unpack_tar(source, size, staging, limits)
    except _CORRUPT as exc:
        kind = "zip" if is_zip else "zip or tar"
        raise InvalidInput.field("artifact", f"not a readable {kind} archive") from exc


# -- zip -------------------------------------------------------------------------------------------------
def _unpack_zip(source: BinaryIO, size: int, staging: Path, limits: ArchiveLimits) -> Digests:
    _check_central_directory(source, limits)
    with zipfile.ZipFile(source) as archive:
        table = MemberTable(limits, size)
        members = archive.infolist()
        for info in members:
            if not info.is_dir() and stat.S_IFMT(info.external_attr >> 16) not in (0, stat.S_IFREG):
                raise UnsafeArtifact.field("artifact", f"member {info.filename[:60]!r} is not a plain file")
            table.admit(info.filename, info.file_size, directory=info.is_dir())
        paths = _checked_paths(table)
        files = [(paths[m.filename], m) for m in members if m.filename in paths]
        return _write_all(staging, files, table, lambda m: archive.open(m))


def _check_central_directory(source: BinaryIO, limits: ArchiveLimits) -> None:
    """Bound the central directory by the member limit before ``zipfile`` builds an object per entry."""
    end = zipfile._EndRecData(source)  # type: ignore[attr-defined]  # the record ZipFile itself reads
    source.seek(0)
    if end is None:
        raise zipfile.BadZipFile("no end of central directory")
    most = limits.max_members * (46 + MAX_PATH_BYTES + 1024)  # fixed header, path, extra fields
    if end[zipfile._ECD_SIZE] > most:  # type: ignore[attr-defined]
        raise UnsafeArtifact.field(
            "artifact", f"more than {limits.max_members} entries (files and directories)"
        )


# -- tar -------------------------------------------------------------------------------------------------
def _unpack_tar(source: BinaryIO, size: int, staging: Path, limits: ArchiveLimits) -> Digests:
    stream = _Bounded(
        _decompressed(source), limits.expanded_cap(size) + _HEADER_BYTES * (limits.max_members + 10)
    )
    with tarfile.open(fileobj=stream, mode="r:") as archive:  # type: ignore[call-overload]
        table, members = MemberTable(limits, size), []
        for member in archive:  # headers only: each is judged before the data behind it is read
            if not (member.isdir() or (member.isreg() and not member.issparse())):
                raise UnsafeArtifact.field("artifact", f"member {member.name[:60]!r} is not a plain file")
            table.admit(member.name, member.size, directory=member.isdir())
            members.append(member)
        paths = _checked_paths(table)
        files = [(paths[m.name], m) for m in members if m.name in paths]
        return _write_all(staging, files, table, archive.extractfile)


def _decompressed(source: BinaryIO) -> Any:
    magic = source.read(6)
    source.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=source, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(source)
    if magic.startswith(b"\xfd7zXZ\x00"):
        from _compression import DecompressReader  # lzma.LZMAFile with a memory limit

        reader = DecompressReader(
            source, lzma.LZMADecompressor, trailing_error=lzma.LZMAError, memlimit=XZ_MEMLIMIT
        )
        return io.BufferedReader(reader)
    return source


class _Bounded(io.RawIOBase):
    """A read-only view of the expanded tar stream that refuses to go past ``limit`` bytes or to serve one
    read over ``CHUNK`` (``tarfile`` reads a long-name or pax header whole, whatever size it declares)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self.stream, self.limit = stream, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > CHUNK:
            raise UnsafeArtifact.field(
                "artifact", "a tar header declares more than 1 MiB of names or attributes"
            )
        self._check(self.stream.tell() + size)
        return self.stream.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET:
            raise OSError("only absolute seeks")
        self._check(offset)
        return self.stream.seek(offset)

    def tell(self) -> int:
        return self.stream.tell()

    def _check(self, position: int) -> None:
        if position > self.limit:
            raise UnsafeArtifact.field("artifact", "expands to more than its limits allow")


# -- both --------------------------------------------------------------------------------------------------
def _checked_paths(table: MemberTable) -> dict[str, str]:
    paths = table.paths()
    check_listing(paths.values())
    return paths


def _write_all(
    staging: Path, files: list[tuple[str, Any]], table: MemberTable, open_member: Callable[[Any], Any]
) -> Digests:
    budget = _Budget(table.limits, table.archive_bytes)
    digests: Digests = {}
    for path, member in files:
        handle = open_member(member)
        if handle is None:
            raise UnsafeArtifact.field("artifact", f"member {path!r} cannot be read")
        with handle:
            digests[path] = _write(handle, staging / path, budget)
    return digests


class _Budget:
    def __init__(self, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.limits, self.archive_bytes, self.written = limits, archive_bytes, 0

    def spend(self, size: int) -> None:
        self.written += size
        self.limits.check_expanded(self.written, self.archive_bytes)


def _write(handle: IO[bytes], target: Path, budget: _Budget) -> str:
    digest = hashlib.sha256()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = target.open("xb")
    except OSError as exc:  # the server's disk, not the upload: never reported as an unreadable archive
        raise StagingFailed(str(target.name)) from exc
    with out:
        while chunk := handle.read(CHUNK):
            budget.spend(len(chunk))
            digest.update(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise StagingFailed(str(target.name)) from exc
    return digest.hexdigest()


class StagingFailed(RuntimeError):
    """Writing a member to the staging directory failed (a full disk, say): a server fault, a 500."""

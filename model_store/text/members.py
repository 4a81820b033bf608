"""The entries of an uploaded model directory, judged from the archive's listing before any is expanded.

Each entry (directories too) counts against the member limit; its name must be a safe relative POSIX path
(no absolute path, ``..``, backslash or control character) within ``MAX_DEPTH`` components of at most
``MAX_NAME_BYTES`` bytes and ``MAX_PATH_BYTES`` in all; no path may be both a file and a directory, or a file
twice; the declared sizes must fit the byte and ratio limits.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from model_store.archive_limits import ArchiveLimits
from model_store.errors import UnsafeArtifact

MAX_DEPTH = 16
"""Most path components of an entry (a Hugging Face model directory needs 1 or 2)."""
MAX_NAME_BYTES = 255
"""Longest path component, in UTF-8 bytes (Linux's NAME_MAX)."""
MAX_PATH_BYTES = 1024
"""Longest path, in UTF-8 bytes."""


def _refuse(message: str) -> UnsafeArtifact:
    return UnsafeArtifact("artifact: " + message, {"artifact": [message]})


def member_path(name: str) -> str:
    """A safe, bounded relative POSIX path for an archive entry, or ``UnsafeArtifact``."""
    shown = repr(name[:60] + ("..." if len(name) > 60 else ""))
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(f"member {shown} has an absolute path")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise _refuse(f"member {shown} has a control character in its name")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise _refuse(f"member {shown} escapes the model directory")
    if len(parts) > MAX_DEPTH:
        raise _refuse(f"member {shown} is nested deeper than {MAX_DEPTH} directories")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise _refuse(f"member {shown} has a name longer than {MAX_NAME_BYTES} bytes")
    path = "/".join(parts)
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise _refuse(f"member {shown} has a path longer than {MAX_PATH_BYTES} bytes")
    return path


class MemberTable:
    """The entries of one archive, admitted one at a time against its limits."""

    def __init__(self, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.limits, self.archive_bytes = limits, archive_bytes
        self.entries = self.declared = 0
        self.files: dict[str, str] = {}
        """Entry name -> safe path, for plain files."""
        self.directories: set[str] = set()
        self._paths: set[str] = set()

    def admit(self, name: str, size: int, *, directory: bool = False) -> None:
        """Count one entry and check its name and declared size (refusing as soon as a limit is passed)."""
        self.entries += 1
        if self.entries > self.limits.max_members:
            raise _refuse(f"more than {self.limits.max_members} entries (files and directories)")
        if directory and name.strip("/") in ("", "."):
            return  # the archive's own root, as ``tar czf m.tgz -C dir .`` writes it
        path = member_path(name)
        if directory:
            self.directories.add(path)
            return
        if path in self._paths:  # the same name always gives the same path
            raise _refuse(f"member {path!r} appears twice")
        self.files[name] = path
        self._paths.add(path)
        self.declared += max(size, 0)
        self.limits.check_expanded(self.declared, self.archive_bytes)

    def paths(self) -> dict[str, str]:
        """Entry name -> final path of every file (a single top-level folder stripped), after refusing a
        path that is both a file and a directory."""
        files = self._paths
        parents = {p.rsplit("/", i)[0] for p in files | self.directories for i in range(1, p.count("/") + 1)}
        clash = sorted(files & (parents | self.directories))
        if clash:
            raise _refuse(f"{clash[0]!r} is both a file and a directory")
        tops = {p.split("/", 1)[0] for p in files}
        if len(tops) == 1 and all("/" in p for p in files):
            return {name: path.split("/", 1)[1] for name, path in self.files.items()}
        return dict(self.files)

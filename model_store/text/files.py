"""The files of a text model version: read from an uploaded archive or a local directory, checked for safety.

Only plain files with relative paths inside the version directory are accepted (no absolute paths, no
``..``, no links or devices), within a member count and an uncompressed size cap. Weights must be
safetensors; pickle-based weights and Python code are refused, as is any ``auto_map`` (custom model code).
"""

from __future__ import annotations

import io
import json
import lzma
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from model_store.artifacts import sha256_bytes
from model_store.errors import InvalidInput, UnsafeArtifact

Files = dict[str, bytes]
REFUSED_SUFFIXES = (
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".pkl",
    ".pickle",
    ".joblib",
    ".h5",
    ".msgpack",
    ".py",
    ".pyc",
)
LISTING = "files.json"


def _member_path(name: str) -> str:
    """A safe relative POSIX path for an archive member, or ``UnsafeArtifact``."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifact.field("artifact", f"member {name!r} has an absolute path")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafeArtifact.field("artifact", f"member {name!r} escapes the model directory")
    return "/".join(parts)


class _Budget:
    def __init__(self, max_members: int, max_bytes: int) -> None:
        self.max_members, self.max_bytes = max_members, max_bytes
        self.members = self.bytes = 0

    def admit(self, size: int) -> None:
        self.members += 1
        self.bytes += size
        if self.members > self.max_members:
            raise UnsafeArtifact.field("artifact", f"more than {self.max_members} files")
        if self.bytes > self.max_bytes:
            raise UnsafeArtifact.field("artifact", f"more than {self.max_bytes} bytes uncompressed")


def read_archive(data: bytes, max_members: int, max_bytes: int) -> Files:
    """Files of a zip or tar (optionally gzip/bz2/xz) archive; a single top-level folder is stripped."""
    budget = _Budget(max_members, max_bytes)
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            files = _read_zip(data, budget)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise InvalidInput.field("artifact", "not a readable zip archive") from exc
    else:
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
                files = _read_tar(archive, budget)
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise InvalidInput.field("artifact", "not a readable zip or tar archive") from exc
    return _strip_common_folder(files)


def _read_zip(data: bytes, budget: _Budget) -> Files:
    files: Files = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            mode = info.external_attr >> 16
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
                raise UnsafeArtifact.field("artifact", f"member {info.filename!r} is not a plain file")
            path = _member_path(info.filename)
            budget.admit(info.file_size)
            with archive.open(info) as handle:
                content = handle.read(info.file_size + 1)
            if len(content) != info.file_size:
                raise UnsafeArtifact.field(
                    "artifact", f"member {info.filename!r} is not the size it declares"
                )
            files[path] = content
    return files


def _read_tar(archive: tarfile.TarFile, budget: _Budget) -> Files:
    files: Files = {}
    for member in archive:
        if member.isdir():
            continue
        if not member.isreg():
            raise UnsafeArtifact.field("artifact", f"member {member.name!r} is not a plain file")
        path = _member_path(member.name)
        budget.admit(member.size)
        handle = archive.extractfile(member)
        if handle is None:
            raise UnsafeArtifact.field("artifact", f"member {member.name!r} cannot be read")
        files[path] = handle.read()
    return files


def _strip_common_folder(files: Files) -> Files:
    tops = {path.split("/", 1)[0] for path in files}
    if len(tops) == 1 and all("/" in path for path in files):
        return {path.split("/", 1)[1]: data for path, data in files.items()}
    return files


def read_directory(directory: Path, max_members: int, max_bytes: int) -> Files:
    """Files of a local model directory (the CLI path); links are refused like in archives."""
    if not directory.is_dir():
        raise InvalidInput.field("artifact", "not a directory")
    budget = _Budget(max_members, max_bytes)
    files: Files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_symlink():
            raise UnsafeArtifact.field("artifact", f"{path.name} is a link")
        if path.is_dir():
            continue
        if not path.is_file():
            raise UnsafeArtifact.field("artifact", f"{path.name} is not a plain file")
        budget.admit(path.stat().st_size)
        files[path.relative_to(directory).as_posix()] = path.read_bytes()
    return files


def check_model_files(files: Files) -> dict[str, object]:
    """Refuse unsafe or incomplete model directories; return the parsed ``config.json``."""
    refused = sorted(p for p in files if p.lower().endswith(REFUSED_SUFFIXES))
    if refused:
        raise UnsafeArtifact(
            "Only safetensors weights are loaded; pickle-based weights and code are refused: "
            + ", ".join(refused[:5]),
            {"artifact": [f"refused file: {p}" for p in refused[:10]]},
        )
    if LISTING in files:
        raise InvalidInput.field("artifact", f"{LISTING} is reserved")
    for required in ("config.json", "tokenizer.json"):
        if required not in files:
            raise InvalidInput.field("artifact", f"{required} is missing (a fast tokenizer is required)")
    if not any(p.endswith(".safetensors") for p in files):
        raise InvalidInput.field("artifact", "no .safetensors weights")
    config = _json(files, "config.json")
    for name in ("config.json", "tokenizer_config.json"):
        if name in files and "auto_map" in _json(files, name):
            raise UnsafeArtifact.field("artifact", f"{name} declares auto_map (custom code is never run)")
    return config


def _json(files: Files, name: str) -> dict[str, object]:
    try:
        value = json.loads(files[name])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput.field("artifact", f"{name} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidInput.field("artifact", f"{name} is not a JSON object")
    return value


def listing(files: Files) -> bytes:
    """The sha256 of every file, as canonical JSON; its own sha256 identifies the version."""
    return json.dumps({p: sha256_bytes(files[p]) for p in sorted(files)}, indent=1, sort_keys=True).encode()

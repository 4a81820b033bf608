"""The files of a text model version, checked for safety: what a listing may hold, what the configs may say.

Uploaded archives are unpacked by ``archive``; a local directory (the CLI) is read here. Weights must be
safetensors; pickle-based weights and Python code are refused, as is any ``auto_map`` (custom model code).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from model_store.artifacts import sha256_bytes
from model_store.errors import InvalidInput, UnsafeArtifact
from model_store.text.members import member_path

Files = dict[str, bytes]
Digests = dict[str, str]
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


def write_files(files: Files, staging: Path) -> Digests:
    """Write in-memory model files (a local directory read by ``read_directory``) under ``staging``."""
    check_listing(files)
    digests: Digests = {}
    for name, data in files.items():
        path = member_path(name)
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        digests[path] = sha256_bytes(data)
    return digests


def check_listing(paths: Iterable[str]) -> None:
    """Refuse, from the file names alone, pickle-based weights, code, a reserved name or a missing file."""
    names = set(paths)
    refused = sorted(p for p in names if p.lower().endswith(REFUSED_SUFFIXES))
    if refused:
        raise UnsafeArtifact(
            "Only safetensors weights are loaded; pickle-based weights and code are refused: "
            + ", ".join(refused[:5]),
            {"artifact": [f"refused file: {p}" for p in refused[:10]]},
        )
    if LISTING in names:
        raise InvalidInput.field("artifact", f"{LISTING} is reserved")
    for required in ("config.json", "tokenizer.json"):
        if required not in names:
            raise InvalidInput.field("artifact", f"{required} is missing (a fast tokenizer is required)")
    if not any(p.endswith(".safetensors") for p in names):
        raise InvalidInput.field("artifact", "no .safetensors weights")


def check_model_files(directory: Path) -> dict[str, object]:
    """Refuse custom code in the configs of a written model directory; return the parsed ``config.json``."""
    config = _json(directory, "config.json")
    _refuse_auto_map("config.json", config)
    if (directory / "tokenizer_config.json").is_file():
        _refuse_auto_map("tokenizer_config.json", _json(directory, "tokenizer_config.json"))
    return config


def _refuse_auto_map(name: str, parsed: dict[str, object]) -> None:
    if "auto_map" in parsed:
        raise UnsafeArtifact.field("artifact", f"{name} declares auto_map (custom code is never run)")


def _json(directory: Path, name: str) -> dict[str, object]:
    try:
        value = json.loads((directory / name).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput.field("artifact", f"{name} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise InvalidInput.field("artifact", f"{name} is not a JSON object")
    return value


def listing(digests: Digests) -> bytes:
    """The sha256 of every file, as canonical JSON; its own sha256 identifies the version."""
    return json.dumps({p: digests[p] for p in sorted(digests)}, indent=1, sort_keys=True).encode()

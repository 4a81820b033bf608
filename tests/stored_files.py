"""Where a registered version's files lie on disk in the default artifact store, for tests that tamper with
them: each blob under ``<data_dir>/artifacts/sha256`` (a legacy version: its directory)."""

from __future__ import annotations

from pathlib import Path

from model_store.store import Store
from model_store.versions import VersionInfo


def stored_files(store: Store, info: VersionInfo) -> dict[str, Path]:
    """Each file of ``info`` by relative path: the file the default store keeps it in."""
    artifacts = store.registry.artifacts
    if info.artifact_files is None:
        root = artifacts.path(info.artifact_dir)
        return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    backend = artifacts.backend
    return {name: Path(backend.path(sha256)) for name, sha256 in info.artifact_files.items()}  # type: ignore[attr-defined]


def artifact_entries(data_dir: Path) -> list[str]:
    """Every entry directly under ``<data_dir>/artifacts`` and ``<data_dir>/artifact-cache`` (staging
    directories included)."""
    return sorted(
        f"{folder}/{p.name}"
        for folder in ("artifacts", "artifact-cache")
        if (data_dir / folder).exists()
        for p in (data_dir / folder).iterdir()
    )

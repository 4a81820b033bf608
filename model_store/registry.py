"""The model registry: names, immutable numbered versions, the ``latest`` and ``production`` aliases."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from model_store.archive_limits import ArchiveLimits
from model_store.artifacts import REFERENCE_FILE, ArtifactStore, sha256_bytes
from model_store.cache import LoadedModelCache
from model_store.errors import Conflict, InvalidInput, ModelNotFound, VersionNotFound
from model_store.manifest import NAME_PATTERN, Manifest
from model_store.reference import read_reference, to_parquet
from model_store.tables import ModelRow, VersionRow, as_utc
from model_store.tabular import TabularModel
from model_store.tabular.checks import complete_tabular_manifest
from model_store.tabular.formats import artifact_format
from model_store.version_files import VersionFiles
from model_store.versions import VersionInfo

ALIASES = ("latest", "production")
DEFAULT_LIMITS = ArchiveLimits()
_NAME = re.compile(NAME_PATTERN)
_REGISTER_ATTEMPTS = 5
LOAD_SECONDS = Histogram(
    "candor_model_load_seconds",
    "Time to load and verify a model version from disk, by flavour.",
    ["flavour"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CACHE_LOOKUPS = Counter("candor_model_cache_total", "Loaded-model cache lookups, by result.", ["result"])


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput.field("name", "Names are 1-64 letters, digits, '_' or '-', starting alphanumeric.")
    return name


class ModelRegistry:
    def __init__(
        self, sessions: sessionmaker[Session], artifacts: ArtifactStore, cache_size: int = 8
    ) -> None:
        self.sessions = sessions
        self.artifacts = artifacts
        self.version_files = VersionFiles(artifacts)
        self.cache: LoadedModelCache[Any] = LoadedModelCache(
            cache_size, on_lookup=lambda result: CACHE_LOOKUPS.labels(result).inc()
        )

    # -- registration -------------------------------------------------------------------------------------
    def register_tabular(
        self,
        manifest: Manifest,
        artifact: bytes | None,
        reference: bytes,
        limits: ArchiveLimits = DEFAULT_LIMITS,
    ) -> VersionInfo:
        """Validate everything, store the files (each once, by sha256), then commit the version row; no
        version is left on failure. ``artifact`` is None for a format that stores none."""
        check_name(manifest.name)
        stored_as = artifact_format(manifest)
        estimator = stored_as.load(artifact, manifest, limits)
        frame = read_reference(reference)
        completed = complete_tabular_manifest(manifest, estimator, frame)
        reference_sha = self.artifacts.put_bytes(to_parquet(frame))
        files = {REFERENCE_FILE: reference_sha}
        artifact_sha = sha256_bytes(stored_as.identity(completed) if stored_as.identity else b"")
        if stored_as.file_name is not None and artifact is not None:
            artifact_sha = files[stored_as.file_name] = self.artifacts.put_bytes(artifact)
        return self._insert_version(
            completed.name, "tabular", completed.to_dict(), files, artifact_sha, reference_sha
        )

    def register_text(self, manifest: Manifest, files: dict[str, bytes]) -> VersionInfo:
        """A Hugging Face classifier directory held in memory (a local directory, the demo)."""
        from model_store.text.files import write_files

        return self.register_text_from(manifest, lambda staging: write_files(files, staging))

    def register_text_from(self, manifest: Manifest, fill: Callable[[Path], dict[str, str]]) -> VersionInfo:
        """A Hugging Face classifier directory written by ``fill`` (returning each file's sha256) into a
        staging directory: checked, loaded once, its files stored by sha256, then recorded."""
        from model_store.text.files import LISTING, check_model_files, listing

        check_name(manifest.name)
        if not manifest.is_text:
            raise InvalidInput.field(
                "manifest.task", "A model directory is registered as text_classification."
            )
        with self.artifacts.staging() as staging:
            digests = fill(staging)
            check_model_files(staging)
            index = listing(digests)
            (staging / LISTING).write_bytes(index)
            files = {**digests, LISTING: sha256_bytes(index)}
            model = self._load_text(manifest, staging)  # refuses what transformers cannot load safely
            for path, sha256 in files.items():
                self.artifacts.put_file(staging / path, sha256)
            info = self._insert_version(
                manifest.name, "text", manifest.to_dict(), files, files[LISTING], sha256_bytes(b"")
            )
        self.cache.get_or_load(info.cache_key, lambda: model)  # loaded once: the check's load is kept
        return info

    def _load_text(self, manifest: Manifest, directory: Path) -> Any:
        from safetensors import SafetensorError

        from model_store.text.model import TextModel

        try:
            return TextModel(manifest, directory)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            raise InvalidInput.field(
                "artifact", f"transformers cannot load it: {type(exc).__name__}"
            ) from exc

    def _insert_version(
        self,
        name: str,
        flavour: str,
        manifest: dict[str, Any],
        files: dict[str, str],
        artifact_sha: str,
        reference_sha: str,
    ) -> VersionInfo:
        for _attempt in range(_REGISTER_ATTEMPTS):
            try:
                with self.sessions.begin() as session:
                    model = session.scalar(select(ModelRow).where(ModelRow.name == name))
                    if model is None:
                        model = ModelRow(name=name)
                        session.add(model)
                        session.flush()
                    current = _latest_number(session, model.id)
                    row = VersionRow(
                        model_id=model.id,
                        version=(current or 0) + 1,
                        flavour=flavour,
                        manifest=manifest,
                        artifact_dir="",
                        artifact_sha256=artifact_sha,
                        reference_sha256=reference_sha,
                        artifact_files=files,
                    )
                    session.add(row)
                    session.flush()
                    return _info(row, model)
            except sa_exc.IntegrityError:
                continue  # another registration took the same number; take the next one
        raise Conflict("Too many concurrent registrations of this model; retry.")

    # -- lookup -------------------------------------------------------------------------------------------
    def list_models(self) -> list[dict[str, Any]]:
        with self.sessions() as session:
            rows = session.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_summary(session, m) for m in rows]

    def get_model(self, name: str) -> dict[str, Any]:
        with self.sessions() as session:
            model = self._model_row(session, name)
            summary = self._model_summary(session, model)
            summary["versions"] = [_info(v, model) for v in model.versions]
            return summary

    def resolve(self, name: str, version: str | int) -> VersionInfo:
        """A version by number, ``latest`` or ``production``."""
        with self.sessions() as session:
            model = self._model_row(session, name)
            number = self._version_number(session, model, str(version))
            row = session.scalar(
                select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.version == number)
            )
            if row is None:
                raise VersionNotFound(name, str(version))
            return _info(row, model)

    def promote(self, name: str, version: str | int) -> VersionInfo:
        info = self.resolve(name, version)
        with self.sessions.begin() as session:
            model = self._model_row(session, name)
            model.production_version = info.version
        return self.resolve(name, info.version)

    def load(self, info: VersionInfo) -> Any:
        """The loaded model, verified against its recorded sha256 on every load from disk."""
        return self.cache.get_or_load(info.cache_key, lambda: self._timed_load(info))

    def _timed_load(self, info: VersionInfo) -> Any:
        started = time.perf_counter()
        model = self._load(info)
        LOAD_SECONDS.labels(info.flavour).observe(time.perf_counter() - started)
        return model

    def _load(self, info: VersionInfo) -> Any:
        if info.flavour == "text":
            return self._load_text(info.manifest, self.version_files.text_directory(info))
        stored_as = artifact_format(info.manifest)
        artifact = None if stored_as.file_name is None else self.version_files.read(info, stored_as.file_name)
        reference = self.version_files.read(info, REFERENCE_FILE)
        estimator = stored_as.load(artifact, info.manifest, None)
        return TabularModel(info.manifest, estimator, read_reference(reference))

    def files(self, info: VersionInfo) -> dict[str, bytes]:
        """Every file of the version by relative path, each verified against its recorded sha256 (what a
        worker without disk or database needs to load it): the artifact and ``reference.parquet``, or
        a text model's directory with its ``files.json`` listing."""
        return self.version_files.all(info)

    def directory(self, info: VersionInfo) -> Path:
        """A text version's files as a local directory on this host, each verified now."""
        return self.version_files.text_directory(info)

    # -- helpers ------------------------------------------------------------------------------------------
    def _model_row(self, session: Session, name: str) -> ModelRow:
        model = (
            session.scalar(select(ModelRow).where(ModelRow.name == name)) if _NAME.fullmatch(name) else None
        )
        if model is None:
            raise ModelNotFound(name)
        return model

    def _version_number(self, session: Session, model: ModelRow, version: str) -> int:
        if version == "latest":
            number = _latest_number(session, model.id)
            if number is None:
                raise VersionNotFound(model.name, version)
            return int(number)
        if version == "production":
            if model.production_version is None:
                raise VersionNotFound(model.name, version)
            return model.production_version
        if not (version.isascii() and version.isdigit()) or len(version) > 9:
            raise VersionNotFound(model.name, version)
        return int(version)

    def _model_summary(self, session: Session, model: ModelRow) -> dict[str, Any]:
        latest = _latest_number(session, model.id)
        return {
            "name": model.name,
            "created_at": as_utc(model.created_at),
            "latest_version": latest,
            "production_version": model.production_version,
        }


def _latest_number(session: Session, model_id: int) -> int | None:
    return session.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == model_id))


def _info(row: VersionRow, model: ModelRow) -> VersionInfo:
    stages = ("production",) if model.production_version == row.version else ()
    return VersionInfo(
        id=row.id,
        name=model.name,
        version=row.version,
        flavour=row.flavour,
        manifest_data=row.manifest,
        artifact_dir=row.artifact_dir,
        artifact_sha256=row.artifact_sha256,
        reference_sha256=row.reference_sha256,
        created_at=as_utc(row.created_at),
        stages=stages,
        artifact_files=row.artifact_files,
    )

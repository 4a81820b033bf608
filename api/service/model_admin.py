"""The registry as the model routes see it: list, describe, register and promote versions, and resolve the
version a route serves (service layer)."""

from __future__ import annotations

from typing import Any, BinaryIO

from api.service.explanations import ExplanationService
from api.service.readiness import ModelReadiness
from model_store.errors import VersionNotFound
from model_store.manifest import read_manifest_text
from model_store.registry import check_name
from model_store.versions import VersionInfo


class Models:
    def __init__(self, service: ExplanationService, readiness: ModelReadiness) -> None:
        self.service = service
        self.registry = service.store.registry
        self.readiness = readiness

    def visible(self, allowlist: frozenset[str] | None) -> list[dict[str, Any]]:
        """The registered models a key with ``allowlist`` (None: every model) may see."""
        return [m for m in self.registry.list_models() if allowlist is None or m["name"] in allowlist]

    def get(self, name: str) -> dict[str, Any]:
        """A model with its versions and stages; ``ready``: its serving version loads in this worker."""
        model = self.registry.get_model(name)
        model["ready"] = self.readiness.serves(model)
        model["versions"] = [
            {
                "version": v.version,
                "created_at": v.created_at,
                "artifact_sha256": v.artifact_sha256,
                "stages": list(v.stages),
            }
            for v in model["versions"]
        ]
        return model

    def version_numbers(self, name: str) -> list[str]:
        return [str(v.version) for v in self.registry.get_model(name)["versions"]]

    def register(
        self, name: str, manifest_text: str, artifact: BinaryIO | None, reference: bytes | None
    ) -> dict[str, Any]:
        """Register a version from the manifest's text (JSON or YAML), the artifact (none for a remote
        model) and reference rows."""
        check_name(name)
        manifest = read_manifest_text(manifest_text, name)
        info = self.service.register(manifest, artifact, reference)
        return self.service.describe_version(info.name, str(info.version))

    def promote(self, name: str, version: str) -> dict[str, Any]:
        """Make ``version`` the model's ``production`` stage."""
        info = self.registry.promote(name, version)
        return self.service.describe_version(info.name, str(info.version))

    def resolve(self, name: str, version: str) -> VersionInfo:
        return self.registry.resolve(name, version)

    def serving(self, name: str) -> VersionInfo:
        """What routes without a version serve (KServe's): production, else the latest."""
        try:
            return self.registry.resolve(name, "production")
        except VersionNotFound:
            return self.registry.resolve(name, "latest")

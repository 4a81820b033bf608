"""The service layer: plain Python (no Flask), callable from views, the CLI, jobs and tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import orjson
from sqlalchemy import exc as sa_exc

from api.methods.registry import known, methods_for
from api.service.computing import Computer
from api.service.explain_request import ExplainRequest
from api.service.idempotency import fingerprint, once
from api.service.recording import draft_for, keeps_weights, out_of_line, recorded_envelope, results_json
from api.service.remote_statement import remote_answer
from api.service.replay import compare, replay_request
from api.settings import Settings
from candor_verify.note import load_signer
from explainers.envelope import Explanation
from explainers.importance import global_importance
from explainers.ood import detector as ood_detector
from explainers.profile import dataset_profile
from explainers.segments import explanation_segments
from model_store import audit_blobs
from model_store.archive_limits import ArchiveLimits
from model_store.array_codec import kept_digests
from model_store.audit import CHECKPOINT
from model_store.errors import IdempotencyKeyTaken, InvalidInput
from model_store.explain_keys import ExplainKeys, Idempotency, KeyedRecord
from model_store.predictors import counting_calls
from model_store.predictors.answers import keeping_answers
from model_store.sqlite_turns import take_write_turn
from model_store.store import Store
from model_store.tables import VersionCacheRow
from model_store.versions import VersionInfo


class ExplanationService(Computer):
    """Computing (``Computer``) over the store's registry, recording, replay, and the per-version views."""

    def __init__(self, store: Store, settings: Settings) -> None:
        super().__init__(store.registry, settings)
        self.store = store
        if store.audit_log.signer is None:  # the checkpoint key, when this host holds it
            store.audit_log.signer = load_signer(settings.resolved_audit_key_file)

    def register(self, manifest: Any, artifact: BinaryIO | None, reference: bytes | None) -> VersionInfo:
        """Register a version: a text model from an archive of its directory (streamed to disk from the
        seekable ``artifact``), else a tabular artifact in the manifest's format (none for a remote model)."""
        limits = ArchiveLimits.from_settings(self.settings)
        if manifest.is_text and artifact is not None:
            stream = artifact
            from model_store.text.archive import unpack_archive

            return self.store.registry.register_text_from(
                manifest, lambda staging: unpack_archive(stream, staging, limits)
            )
        if artifact is None and (manifest.is_text or manifest.format != "remote"):
            raise InvalidInput.field("artifact", "Only a remote model (format: remote) has no artifact.")
        if reference is None:
            raise InvalidInput.field("reference", "Tabular models need reference rows.")
        sent = artifact.read() if artifact is not None else None
        return self.store.registry.register_tabular(manifest, sent, reference, limits)

    def describe_version(self, name: str, version: str) -> dict[str, Any]:
        info, model = self._loaded(name, version)
        return {
            "name": info.name,
            "version": info.version,
            "flavour": info.flavour,
            "format": info.manifest.format if info.flavour == "tabular" else None,
            "stages": list(info.stages),
            "artifact_sha256": info.artifact_sha256,
            "reference_sha256": info.reference_sha256,
            "created_at": info.created_at,
            "manifest": info.manifest_data,
            "methods": methods_for(model),
            "feature_order": model.feature_order,
        }

    def predict(
        self, name: str, version: str, instances: list[Any], truncate: bool = False
    ) -> dict[str, Any]:
        self._check_count(instances)
        info, model = self._loaded(name, version)
        text = info.flavour == "text"
        if text:
            self._check_text_lengths(instances)
        records = model.validate(instances, truncate=truncate) if text else model.validate(instances)
        return {
            "model": {"name": info.name, "version": info.version, "sha256": info.artifact_sha256},
            "predictions": model.predictions(records),
        }

    def answer(self, request: ExplainRequest) -> tuple[dict[str, Any], bool]:
        """The envelope for ``request``, computed and recorded; and whether it was instead read back from the
        record of the same request sent earlier with the same ``idempotency_key``
        (``api.service.idempotency``)."""
        if request.idempotency_key is None or request.key_id is None:
            return self._answered(request), False
        key_id, key = request.key_id, request.idempotency_key
        sha = fingerprint(
            {
                "method": request.method,
                "model": request.model,
                "version": request.asked_version,  # a retry of ``latest`` is the same request after a new one
                "instances": request.instances,
                "options": request.recorded_options,
            }
        )
        keys = ExplainKeys(self.store.sessions)
        return once(
            sha,
            find=lambda: keys.find(key_id, key),
            sha256_of=lambda earlier: earlier.request_sha256,
            answer_of=lambda earlier: recorded_envelope(
                self.store, earlier.record_id, lambda record: self.recomputed(record, request.instances)
            ),
            run=lambda: self._answered(request, Idempotency(key, sha)),
            what="explanation",
        )

    def _answered(self, request: ExplainRequest, idempotency: Idempotency | None = None) -> dict[str, Any]:
        """The envelope of a new explanation (its results as the record's JSON bytes when the request
        allows it: written once for both)."""
        explanation, results = self._explained(request, idempotency)
        envelope = explanation.to_dict()
        if request.results_as_json and results is not None:
            envelope["results"] = results
        return envelope

    def explain(self, request: ExplainRequest, idempotency: Idempotency | None = None) -> Explanation:
        """Compute an explanation and commit its audit record before returning it. With ``idempotency``, the
        request's key is claimed in the record's transaction: ``IdempotencyKeyTaken`` and nothing recorded
        when another request claimed it first."""
        return self._explained(request, idempotency)[0]

    def _explained(
        self, request: ExplainRequest, idempotency: Idempotency | None
    ) -> tuple[Explanation, orjson.Fragment | None]:
        """``explain``, and the results' canonical JSON as the record holds them (None for a method whose
        record keeps its arrays apart)."""
        method = known(request.method)
        with keeping_answers():  # a remote model's rows are asked once per explanation
            with counting_calls() as tally:
                info, explanation = self.compute(request)
            answer = remote_answer(
                info,
                lambda: self.store.registry.load(info),
                lambda: method.prepare(request.instances, request.options)[0],  # the model's rows
                tally,
            )
        results = None if method.arrays_out_of_line else results_json(explanation)
        draft = draft_for(
            request.method,
            explanation,
            info,
            request.instances,
            request.recorded_options,
            request.key_id,
            remote=answer,
            results=results,
        )
        draft, blobs = out_of_line(draft, keeps_weights(info, self.settings.audit_attention))
        try:
            with self.store.sessions.begin() as session:  # the record, its blobs and its key commit together
                take_write_turn(session)  # on SQLite, before the key's claim writes
                if idempotency is not None and request.key_id is not None:
                    keyed = KeyedRecord(idempotency.request_sha256, explanation.id)
                    ExplainKeys.claim(session, request.key_id, idempotency.key, keyed)
                audit_blobs.append_with_blobs(self.store.audit, session, [draft], blobs)
        except sa_exc.IntegrityError as exc:
            if idempotency is None:
                raise
            raise IdempotencyKeyTaken(idempotency.key) from exc
        return explanation, results

    def recomputed(self, record: dict[str, Any], instances: list[Any] | None = None) -> dict[str, Any]:
        """The explanation ``record`` describes, computed again with its recorded version and options
        (``instances``: for a record that kept only their sha256)."""
        return self._recompute(record, instances)[1].to_dict()

    def _recompute(
        self, record: dict[str, Any], instances: list[Any] | None
    ) -> tuple[VersionInfo, Explanation]:
        sent, options = replay_request(record, instances)
        model = record["model"]
        recorded = ExplainRequest.recorded(
            record["kind"], model["name"], str(model["version"]), sent, options
        )
        with keeping_answers():  # as the recorded explanation was computed (a remote model's rows)
            return self.compute(recorded)

    def replay(self, record_id: str, instances: list[Any] | None = None) -> dict[str, Any]:
        """Recompute a recorded explanation with its recorded version, options and seed, and compare."""
        record = self.store.audit.get(record_id)
        if record["kind"] == CHECKPOINT:
            raise InvalidInput.field("id", "A checkpoint record has no explanation to replay.")
        info, explanation = self._recompute(record, instances)
        stored = audit_blobs.AuditBlobs(self.store.sessions).load(kept_digests(record["explanation"]))
        return {
            "id": record_id,
            "kind": record["kind"],
            "model": {"name": info.name, "version": info.version, "sha256": info.artifact_sha256},
            "seed": record.get("seed"),
            **compare(record["explanation"], explanation.to_dict(), record["kind"], stored.get),
        }

    def importance(self, name: str, version: str) -> dict[str, Any]:
        """Global importance, computed once per version and kept in the database for every worker."""
        info, model = self._tabular(name, version, "importance")
        value = self._version_cached(info, "importance:v1", lambda: global_importance(model))
        return {"kind": "global_importance", **value}

    def profile(self, name: str, version: str) -> dict[str, Any]:
        """The reference data's profile (summaries, correlations, anomalies), computed once per version."""
        info, model = self._tabular(name, version, "profile")
        return self._version_cached(info, "profile:v1", lambda: dataset_profile(model, ood_detector(model)))

    def segments(self, name: str, version: str, k_max: int) -> dict[str, Any]:
        """The reference rows clustered by their SHAP attributions, computed once per version and k_max."""
        info, model = self._tabular(name, version, "segments")
        key = f"segments:v1:k_max={k_max}"
        return self._version_cached(info, key, lambda: explanation_segments(info, model, k_max))

    def _tabular(self, name: str, version: str, what: str) -> tuple[VersionInfo, Any]:
        """The version, loaded; refused (422) before loading unless it is a tabular model."""
        info = self.store.registry.resolve(name, version)
        if info.flavour != "tabular":
            raise InvalidInput.field("method", f"{what} does not apply to {info.flavour} models.")
        return info, self.store.registry.load(info)

    def _version_cached(
        self, info: VersionInfo, key: str, build: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """``build()`` stored in the version cache under ``key`` (the stored value when there is one)."""
        with self.store.sessions() as session:
            row = session.get(VersionCacheRow, (info.id, key))
            value, cached = (row.value, True) if row is not None else (None, False)
        if value is None:
            value = build()
            try:
                with self.store.sessions.begin() as session:
                    if session.get(VersionCacheRow, (info.id, key)) is None:
                        session.add(VersionCacheRow(version_id=info.id, key=key, value=value))
            except sa_exc.IntegrityError:
                pass  # another worker stored the same result first
        model = {"name": info.name, "version": info.version, "sha256": info.artifact_sha256}
        return {"model": model, "cached": cached, **value}

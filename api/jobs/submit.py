"""Submitting a job: everything that can be refused is refused here, with a 4xx naming the field, so a job
that is accepted never fails for its request: the model version is resolved (404), the kind must apply to it,
the options pass the same schema and caps as the explain endpoint's and a probe on one reference row (for
what only the model knows: target classes, features to vary, layers), and the rows are read, checked and
normalised (``api.jobs.inputs``), then stored with the job row in one transaction."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from pathlib import Path
from typing import IO, Any

from marshmallow import ValidationError

from api.jobs.inputs import check_labels, target_schema, write_input
from api.methods.registry import spec
from api.service.computing import check_label_columns
from api.service.explain_request import ExplainRequest
from api.service.explanations import ExplanationService
from api.service.idempotency import fingerprint, once
from model_store.artifacts import REFERENCE_FILE
from model_store.errors import InvalidInput
from model_store.explain_keys import Idempotency
from model_store.jobs import JobStore, NewJob
from model_store.manifest import flatten_messages
from model_store.versions import VersionInfo

log = logging.getLogger("candor.jobs")
PROBE_TEXT = "A short probe text."
FIELD_OF_PROBE_ERROR = {"method": "kind", "model": "kind"}


DATASETS = ("reference",)
"""Stored datasets a job may name."""
HASH_BLOCK = 1 << 20


@dataclasses.dataclass(frozen=True)
class JobRequest:
    """What a submission asks for, as sent: the rows of ``upload`` (named ``filename``) or of a stored
    ``dataset``, explained by ``kind`` with ``options`` on ``model`` ``version``."""

    model: str
    version: str
    kind: str
    options: Any
    upload: IO[bytes] | None = None
    filename: str | None = None
    dataset: str | None = None


def request_fingerprint(request: JobRequest) -> str:
    """The sha256 of a job request as sent: its fields (``options`` as parsed JSON, so key order and spacing
    do not count) and the uploaded file's bytes (not its name). The upload is read once and rewound."""
    file_hash = None
    if request.upload is not None:
        digest = hashlib.sha256()
        while block := request.upload.read(HASH_BLOCK):
            digest.update(block)
        request.upload.seek(0)
        file_hash = digest.hexdigest()
    return fingerprint(
        {
            "model": request.model,
            "version": request.version,
            "kind": request.kind,
            "options": request.options,
            "dataset": request.dataset,
            "file_sha256": file_hash,
        }
    )


def validate_options(kind: str, options: Any) -> dict[str, Any]:
    """The options of ``kind`` as its explain endpoint takes them (no instances); 422 ``options.<field>``."""
    if not isinstance(options, dict):
        raise InvalidInput.field("options", "Must be a JSON object.")
    try:
        loaded: dict[str, Any] = spec(kind).options_schema(exclude=("instances",)).load(options)
    except ValidationError as exc:
        errors = flatten_messages(exc.messages, "options")
        raise InvalidInput("The options do not match the schema.", errors) from exc
    return loaded


class Submission:
    def __init__(self, service: ExplanationService, jobs: JobStore) -> None:
        self.service = service
        self.settings = service.settings
        self.jobs = jobs

    def submit(
        self, request: JobRequest, key_id: str | None, idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Check the request, store the rows, queue the job: its description, and whether it is the job
        queued earlier under the same ``idempotency_key`` (the same request sent again)."""
        if idempotency_key is None:
            return self._queue(request, key_id, None), False
        keyed = Idempotency(idempotency_key, request_fingerprint(request))
        return once(
            keyed.request_sha256,
            find=lambda: self.jobs.by_idempotency_key(key_id, idempotency_key),
            sha256_of=lambda earlier: str(earlier["request_sha256"]),
            answer_of=lambda earlier: earlier,
            run=lambda: self._queue(request, key_id, keyed),
            what="job",
        )

    def _queue(self, request: JobRequest, key_id: str | None, keyed: Idempotency | None) -> dict[str, Any]:
        kind, upload = request.kind, request.upload
        if upload is not None:
            upload.seek(0)  # from its start, though a lost race for its key read it before
        info = self.service.store.registry.resolve(request.model, request.version)
        loaded = self.service.store.registry.load(info)
        if not spec(kind).applies(loaded):
            raise InvalidInput.field("kind", f"{kind} does not apply to {info.flavour} models.")
        checked = validate_options(kind, request.options)
        self._check_caps(kind, checked)
        self._probe(info, loaded, kind, checked)
        labels = {column: f"options.{option}" for column, option in spec(kind).label_columns(checked).items()}
        check_label_columns(info, labels)
        with self.jobs.files.staging() as staging:
            input_path = staging / "input.parquet"
            total, source = self._write_rows(request, info, input_path, list(labels))
            if labels:
                check_labels(input_path, labels, [str(c) for c in loaded.classes])
            return self.jobs.create(
                NewJob(
                    model_name=info.name,
                    model_version=info.version,
                    kind=kind,
                    options=checked,
                    source=source,
                    key_id=key_id,
                    total_rows=total,
                    chunk_rows=self.settings.job_chunk_rows,
                    idempotency_key=keyed.key if keyed else None,
                    request_sha256=keyed.request_sha256 if keyed else None,
                ),
                input_path,
            )

    def _write_rows(
        self, request: JobRequest, info: VersionInfo, dest: Path, label_columns: list[str]
    ) -> tuple[int, dict[str, Any]]:
        """The request's rows (a stored dataset or the upload) normalised into ``dest``: their count and
        the job's ``source``."""
        schema = target_schema(info.manifest, label_columns)
        chunk_rows, max_rows = self.settings.job_chunk_rows, self.settings.max_job_rows
        if request.dataset is not None:
            stream = self._dataset(info, request.dataset)
            total = write_input(
                stream,
                schema,
                dest,
                chunk_rows,
                max_rows,
                field="dataset",
                extra_columns_allowed=True,
                label_columns=label_columns,
            )
            return total, {"type": "dataset", "name": request.dataset}
        if request.upload is None:
            raise InvalidInput.field("file", "Send a CSV or Parquet file, or name a dataset.")
        total = write_input(request.upload, schema, dest, chunk_rows, max_rows, label_columns=label_columns)
        return total, {"type": "upload", "filename": (request.filename or "")[:200]}

    def _check_caps(self, kind: str, options: dict[str, Any]) -> None:
        """The method's per-request caps, named as job options."""
        for name, cap in spec(kind).caps(self.settings).items():
            if (options.get(name) or 0) > cap:
                raise InvalidInput.field(f"options.{name}", f"At most {cap}.")

    def _probe(self, info: VersionInfo, model: Any, kind: str, options: dict[str, Any]) -> None:
        """Explain one reference row (or a short text) with the options made cheap: what only the model can
        refuse (an unknown target class, an immutable feature to vary, a layer it lacks) is refused now."""
        if info.flavour == "text":
            row: dict[str, Any] = {"text": PROBE_TEXT}
        else:
            row = model.reference.head(1).to_dict("records")[0]
        cheap = {**options, **spec(kind).probe_options}
        try:
            self.service.compute(ExplainRequest.recorded(kind, info.name, str(info.version), [row], cheap))
        except InvalidInput as exc:
            errors = {
                _option_field(name): messages
                for name, messages in exc.errors.items()
                if not name.startswith("instances")
            }
            if errors:
                raise InvalidInput("The options do not fit this model.", errors) from exc
            log.warning("job probe on a reference row failed: %s", exc.detail)

    def _dataset(self, info: VersionInfo, name: str) -> IO[bytes]:
        if name not in DATASETS:
            raise InvalidInput.field("dataset", f"Stored datasets: {', '.join(DATASETS)}.")
        if info.flavour != "tabular":
            raise InvalidInput.field("dataset", "Only tabular versions store reference rows.")
        return io.BytesIO(self.service.store.registry.version_files.read(info, REFERENCE_FILE))


def _option_field(name: str) -> str:
    head = name.split(".", 1)[0]
    return FIELD_OF_PROBE_ERROR.get(head, f"options.{name}")

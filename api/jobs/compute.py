"""The Dask task: compute one chunk of a job in a worker process that needs only Candor installed.

The runner sends each task what it needs: the chunk's rows (an Arrow IPC stream, ``model_store.job_inputs``)
and the name of the job's model, with the runner's limits and none of its places or secrets
(``for_workers``). The model version itself (``model_store.shipped``: its description and files) reaches
every worker once per job as a Dask worker plugin (``ShipModel``: the scheduler hands it to the workers there
now and to any that join later, whatever Dask does with task data), and is verified and loaded there once. A
worker opens no database, data dir or artifact store. It computes the chunk:

- **in one call** when the method batches and each row's result does not depend on the other rows
  (deterministic SHAP: tree or linear). Batching is what makes a job fast; the chunk's explanation is
  split into per-row envelopes.
- **row by row** otherwise (counterfactuals and reasons are seeded per row position and share one time
  budget per request; text models run one text at a time anyway; sampled SHAP draws depend on the row's
  position), so every row's result is what that row sent alone gets: what its audit record says, and what
  a replay of that record recomputes.
- When a one-call chunk fails (one bad row fails the whole request), it is computed again row by row: a bad
  row gets an error line (``status: error`` and a problem object) and the others their results.

The worker makes each explained row's audit record in its stored form (attention weights as blob
references, as the explain endpoint records them, with the blobs' bytes beside) and packs the chunk
(``model_store.audit_chunks``: the records and the failed rows' error lines, compressed, content-addressed,
each record's leaf hash computed); the runner commits the chunk, its records' rows, their blobs and the
progress in one transaction. The job's result lines are read back from the chunk (``api.jobs.results``): a
row is stored once.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
from distributed.diagnostics.plugin import WorkerPlugin

from api.jobs import rows as row_lines
from api.jobs.summaries import accumulate
from api.methods.registry import spec
from api.service.computing import Computer
from api.service.explain_request import ExplainRequest
from api.service.jsonbytes import dumps_bytes
from api.service.recording import draft_for, out_of_line
from api.settings import Settings
from explainers.envelope import Explanation
from model_store.audit import RecordDraft, StoredRecord, stored_form
from model_store.audit_chunks import RecordChunk, pack
from model_store.cache import LoadedModelCache
from model_store.errors import CandorError, PredictorFailed
from model_store.job_inputs import rows_of
from model_store.shipped import ShippedModel, ShippedModels
from model_store.tables import utcnow
from model_store.versions import VersionInfo

log = logging.getLogger("candor.jobs")
MAX_CACHED_MODELS = 4


@dataclasses.dataclass(frozen=True)
class ChunkTask:
    job_id: str
    chunk: int
    first_row: int
    model_name: str
    model_version: int
    kind: str
    options: dict[str, Any]
    key_id: str | None
    batched: bool
    rows: bytes
    """The chunk's input rows, an Arrow IPC stream."""
    model: str
    """The name of the ``ShipModel`` plugin that gave this worker the job's model version."""


@dataclasses.dataclass(frozen=True)
class ChunkOutcome:
    chunk: int
    rows: int
    errors: int
    packed: RecordChunk
    """The chunk's rows as stored: the explained rows' records and the failed rows' lines, compressed."""
    blobs: list[tuple[str, bytes]]
    """(sha256, bytes) of the arrays the records hold as blob references (attention weights), each once."""
    summary: dict[str, Any]
    explanation: dict[str, Any] | None
    """kind, method and output of the chunk's explanation (the same for every row of the job)."""
    batch_next: bool
    """Whether the next chunks should be tried in one call (false once rows proved position-dependent)."""


_models: LoadedModelCache[Any] = LoadedModelCache(MAX_CACHED_MODELS)
"""The versions this worker process has loaded (each once), by version and sha256."""


def for_workers(settings: Settings) -> Settings:
    """What a worker is told of the runner's settings: its limits, and none of its places, addresses or
    secrets (a worker may run on a machine that must not learn them)."""
    return dataclasses.replace(
        settings,
        data_dir=Path("."),
        database_url="",
        artifact_store="",
        audit_key_file="",
        rate_limit_storage="memory://",
        dask_scheduler="",
        dask_dashboard="",
        bind="127.0.0.1:0",
        # A chunk is one request to the computer: its row count is the job's, not an HTTP client's.
        max_instances=max(settings.max_instances, settings.job_chunk_rows),
    )


class ModelNotShipped(Exception):
    """This worker holds no model under the task's name (its plugin was removed, or the scheduler is new)."""


class ShipModel(WorkerPlugin):
    """The job's model version for every worker of the cluster, once each: registered by the runner for the
    length of a claim of a job (named after both), kept by the scheduler for workers that join later,
    removed after."""

    def __init__(self, job_id: str, shipped: ShippedModel) -> None:
        self.name = f"candor-model-{job_id}-{uuid.uuid4().hex[:8]}"  # one per claim of the job
        self.shipped = shipped

    def setup(self, worker: Any) -> None:
        _shipped[self.name] = self.shipped

    def teardown(self, worker: Any) -> None:
        _shipped.pop(self.name, None)


_shipped: dict[str, ShippedModel] = {}


def compute_chunk(settings: Settings, task: ChunkTask, shipped: ShippedModel | None = None) -> ChunkOutcome:
    """The Dask task: compute chunk ``task.chunk`` on the job's model (``shipped``, else the one its plugin
    gave this worker) and pack its rows; never raises for a row's error."""
    shipped = shipped or _shipped.get(task.model)
    if shipped is None:
        raise ModelNotShipped(task.model)
    _freeze_after_first_chunk()
    one_thread = dataclasses.replace(settings, booster_threads=1)  # a worker process per core
    computer = Computer(ShippedModels(shipped, _models), one_thread)
    instances = rows_of(task.rows)
    info = shipped.info
    rows: Rows | None = None
    batch_next = task.batched and spec(task.kind).batched
    if batch_next:
        explanation, batch_next = _in_one_call(computer, task, instances)
        if explanation is not None:
            rows = _split(task, info, instances, explanation)
    if rows is None:
        rows = _row_by_row(computer, task, info, instances)
    entries, lines, blobs, first = rows
    meta = _meta(first)
    feature_order = (meta or {}).get("output", {}).get("feature_order")
    return ChunkOutcome(
        chunk=task.chunk,
        rows=len(lines),
        errors=sum(1 for line in lines if line["status"] != "ok"),
        packed=pack(entries),
        blobs=list(blobs.items()),
        summary=accumulate(task.kind, lines, feature_order),
        explanation=meta,
        batch_next=batch_next,
    )


Rows = tuple[list[StoredRecord | bytes], list[dict[str, Any]], dict[str, bytes], Explanation | None]
"""A chunk's rows as stored (records and error lines), its result lines, the blobs its records refer to,
and the explanation that states its kind, method and output."""


def _split(
    task: ChunkTask,
    info: VersionInfo,
    instances: list[dict[str, Any]],
    explanation: Explanation,
) -> Rows:
    """The rows of a chunk explained in one call, each its own record (``rows.split_records``), recorded
    now."""
    row_quality = spec(task.kind).row_quality
    if row_quality is None:  # _in_one_call returns an explanation only for methods that split
        raise ValueError(f"{task.kind} explanations do not split into rows")
    split = row_lines.split_records(
        task.kind,
        explanation,
        row_quality,
        info,
        instances,
        task.options,
        task.key_id,
        task.job_id,
        task.first_row,
        utcnow(),
    )
    entries: list[StoredRecord | bytes] = [row.record for row in split]
    lines = [row_lines.ok_line(task.first_row + i, row.id, row.result) for i, row in enumerate(split)]
    return entries, lines, {}, explanation


def _row_by_row(
    computer: Computer, task: ChunkTask, info: VersionInfo, instances: list[dict[str, Any]]
) -> Rows:
    """The rows of a chunk explained one by one: a failed row gets an error line, the others a record,
    recorded once all are computed."""
    entries: list[RecordDraft | bytes] = []
    lines: list[dict[str, Any]] = []
    blobs: dict[str, bytes] = {}
    first: Explanation | None = None
    for offset, instance in enumerate(instances):
        outcome = _alone(computer, task, instance)
        row = task.first_row + offset
        if isinstance(outcome, BaseException):
            line = row_lines.error_line(row, outcome)
            entries.append(dumps_bytes(line))
            lines.append(line)
            continue
        first = first or outcome
        source = row_lines.job_source(task.job_id, row)
        draft, arrays = out_of_line(  # kept whole: the job's result is read from its records
            draft_for(task.kind, outcome, info, [instance], task.options, task.key_id, source), keep=True
        )
        blobs.update((blob.sha256, bytes(blob.data)) for blob in arrays)
        entries.append(draft)
        lines.append(row_lines.ok_line(row, outcome.id, outcome.results[0]))
    now = utcnow()
    stored = [stored_form(entry, now) if isinstance(entry, RecordDraft) else entry for entry in entries]
    return stored, lines, blobs, first


def _in_one_call(
    computer: Computer, task: ChunkTask, instances: list[dict[str, Any]]
) -> tuple[Explanation | None, bool]:
    """The chunk's explanation from one call, when each of its rows got what that row alone gets (None when
    its rows must be computed alone), and whether later chunks are worth trying in one call."""
    try:
        _, explanation = computer.compute(_request(task, instances))
    except PredictorFailed:
        raise  # a remote model's predictor failed: the chunk fails (row by row would ask it once a row)
    except CandorError:
        return None, True  # some row is bad: this chunk row by row, so only that row fails
    method = spec(task.kind)
    if method.row_quality is None or not method.row_independent(explanation):
        return None, False
    return explanation, True


def _request(task: ChunkTask, instances: list[dict[str, Any]]) -> ExplainRequest:
    return ExplainRequest.recorded(
        task.kind, task.model_name, str(task.model_version), instances, task.options
    )


def _alone(computer: Computer, task: ChunkTask, instance: dict[str, Any]) -> Explanation | BaseException:
    try:
        return computer.compute(_request(task, [instance]))[1]
    except CandorError as exc:
        return exc
    except Exception as exc:  # a library failure on one row must not fail the job
        log.exception("job %s: row failed unexpectedly", task.job_id)
        return exc


def _meta(explanation: Explanation | None) -> dict[str, Any] | None:
    """kind, method and output of ``explanation`` as JSON values (not its results: a chunk's are many)."""
    if explanation is None:
        return None
    envelope = explanation.to_dict()
    meta: dict[str, Any] = orjson.loads(
        dumps_bytes({key: envelope[key] for key in ("kind", "method", "output")})
    )
    return meta


def warm_up() -> bool:
    """Run on every worker when a runner starts: importing this module imported the explainers."""
    return True


_chunks_seen = 0


def _freeze_after_first_chunk() -> None:
    """At the start of a Dask worker's second chunk (its model and explainer loaded by the first), move what
    is alive out of the collector's sight, as a gunicorn worker does at start: a chunk makes ~0.2M objects,
    so full collections come often, and each would otherwise walk the whole heap again (~0.3 s). Not in other
    processes (a test calling ``compute_chunk``)."""
    global _chunks_seen
    _chunks_seen += 1
    if _chunks_seen != 2:
        return
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return
    gc.collect()
    gc.freeze()

"""Batch jobs as the job routes see them: submit, read, cancel and fetch results, for the jobs a caller may
see (its own, every key's with ``admin``, of the models its allowlist names; others are a 404)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from api.jobs.results import JobResults, parquet_result
from api.jobs.submit import JobRequest, Submission
from api.jobs.summaries import finalize
from api.service.explanations import ExplanationService
from model_store.errors import Conflict
from model_store.jobs import FINISHED, SUCCEEDED, JobStore, chunk_count


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who asks: its key id, whether it has ``admin``, and its model allowlist (None: every model)."""

    key_id: str | None
    admin: bool
    models: frozenset[str] | None


class Jobs:
    def __init__(self, service: ExplanationService) -> None:
        self.store = JobStore(service.store.sessions, service.settings.data_dir)
        self.records = service.store
        self.submission = Submission(service, self.store)

    def submit(
        self, request: JobRequest, key_id: str | None, idempotency_key: str | None
    ) -> tuple[dict[str, Any], bool]:
        """The queued job, and whether it is the one queued earlier under the same key."""
        return self.submission.submit(request, key_id, idempotency_key)

    def get(self, job_id: str, caller: Caller) -> dict[str, Any]:
        return self.store.get(job_id, **dataclasses.asdict(caller))

    def cancel(self, job_id: str, caller: Caller) -> dict[str, Any]:
        return self.store.cancel(job_id, **dataclasses.asdict(caller))

    def result_lines(self, job_id: str, caller: Caller) -> Iterator[bytes]:
        """The result's JSON lines, chunk by chunk (409 until the job has succeeded)."""
        return self._results(job_id, caller).json_lines()

    def result_parquet(self, job_id: str, caller: Caller) -> Path:
        """The result as one Parquet file, written on first request (409 until the job has succeeded)."""
        return parquet_result(self._results(job_id, caller))

    def _results(self, job_id: str, caller: Caller) -> JobResults:
        """The job's results, once it has succeeded (else 409)."""
        job = self.get(job_id, caller)
        if job["status"] != SUCCEEDED:
            state = "has " + job["status"] if job["status"] in FINISHED else "is " + job["status"]
            raise Conflict(f"The job {state}; results are served once it has succeeded.")
        return JobResults(self.records, self.store, job)


def progress(job: dict[str, Any]) -> dict[str, Any]:
    """How far a job is: rows and chunks done of their totals, and its row errors."""
    return {
        "rows_done": job["rows_done"],
        "rows_total": job["total_rows"],
        "chunks_done": job["chunks_done"],
        "chunks_total": chunk_count(job["total_rows"], job["chunk_rows"]),
        "chunk_rows": job["chunk_rows"],
        "errors": job["errors"],
    }


def summary_of(job: dict[str, Any]) -> dict[str, Any]:
    """The job's summary so far (the method's figures from its accumulator)."""
    return finalize(job["kind"], (job["summary"] or {}).get("acc", {}))

"""``candor jobs run``: claim jobs, compute their chunks on Dask, commit each chunk in order.

For each claimed job the runner keeps up to two chunks per worker in flight and commits finished chunks in
order, each in one transaction: the job's progress (guarded: only the runner holding the job, only the next
chunk) and the chunk as stored (``model_store.audit_chunks``: the rows' audit records and error lines,
which the job's result is read from), with the records' blobs. A runner killed at any point therefore
loses and duplicates nothing: the job's heartbeat goes stale, another runner reclaims it and resumes at
``chunks_done``. A cancelled or reclaimed job fails the guard; the runner drops the chunk and moves on.
On SIGTERM or SIGINT the runner finishes the chunk it is committing, gives the job back to the queue and
exits. When the Dask scheduler goes away (``ClusterLost``) the job is given back too, and the runner claims
nothing until a scheduler answers again. Only the runner touches the database: its workers get each chunk's
rows and, once per job, the model (``api.jobs.compute``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import signal
import socket
import threading
import uuid
from concurrent.futures import CancelledError
from typing import Any

from api.jobs.cluster import dask_client, worker_count
from api.jobs.compute import (
    ChunkOutcome,
    ChunkTask,
    ModelNotShipped,
    ShipModel,
    compute_chunk,
    for_workers,
    warm_up,
)
from api.jobs.summaries import merge
from api.settings import Settings
from candor_verify.note import load_signer
from model_store import audit_blobs, audit_chunks
from model_store.array_codec import Blob
from model_store.audit_log import Integrator
from model_store.errors import CandorError
from model_store.jobs import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    ChunkProgress,
    JobStore,
    LostJob,
    chunk_count,
)
from model_store.shipped import ShippedModel
from model_store.sqlite_turns import take_write_turn
from model_store.store import Store

log = logging.getLogger("candor.jobs")
IN_FLIGHT_PER_WORKER = 2
POLL_SECONDS = 0.25
RECONNECT_SECONDS = 2.0
MAX_GIVE_BACKS = 10


class ClusterLost(Exception):
    """The Dask scheduler went away mid-job (or a worker had not got the job's model): the job is given back
    to the queue at its last committed chunk, not failed."""

    def __init__(self, jobs_run: int = 0) -> None:
        super().__init__("the Dask cluster was lost")
        self.jobs_run = jobs_run


@dataclasses.dataclass
class Transfer:
    """What a job sent to the workers: its model once per worker, and each chunk's rows."""

    workers: int
    model_bytes: int
    rows_bytes: int = 0

    @property
    def total(self) -> int:
        return self.workers * self.model_bytes + self.rows_bytes


def _result(future: Any) -> ChunkOutcome:
    """A chunk's outcome; ``ClusterLost`` when its task was cancelled because the scheduler went away, or
    its worker had no model (a scheduler that restarted lost the plugin); a task that raised otherwise
    fails the job, as before."""
    try:
        return future.result()  # type: ignore[no-any-return]
    except Exception as exc:
        if future.status == "error" and not isinstance(exc, ModelNotShipped):
            raise  # the task itself raised (whatever the exception's type): the chunk failed
        raise ClusterLost() from exc


def _unship(client: Any, plugin: str) -> None:
    """Remove the job's model from the workers (a scheduler that restarted no longer knows the plugin)."""
    try:
        client.unregister_worker_plugin(plugin)
    except Exception:
        log.debug("model plugin %s was already gone", plugin, exc_info=True)


class Heartbeat:
    """A thread refreshing the held job's heartbeat; ``lost`` is set when the runner no longer holds it."""

    def __init__(self, jobs: JobStore, job_id: str, runner_id: str, every: float) -> None:
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, args=(jobs, job_id, runner_id, every), name="candor-heartbeat", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self, jobs: JobStore, job_id: str, runner_id: str, every: float) -> None:
        while not self._stop.wait(every):
            try:
                if not jobs.heartbeat(job_id, runner_id):
                    self.lost.set()
                    return
            except Exception:  # the database may be briefly unreachable; the next beat retries
                log.warning("job %s: heartbeat failed", job_id, exc_info=True)


class Runner:
    def __init__(
        self, settings: Settings, store: Store | None = None, poll_seconds: float = POLL_SECONDS
    ) -> None:
        self.settings = settings
        self.store = store or Store(
            settings.data_dir,
            settings.resolved_database_url,
            settings.model_cache_size,
            artifact_store=settings.artifact_store,
        )
        if self.store.audit_log.signer is None:
            self.store.audit_log.signer = load_signer(settings.resolved_audit_key_file)
        self.jobs = JobStore(self.store.sessions, settings.data_dir)
        self.worker_settings = for_workers(settings)
        self._given_back: collections.Counter[str] = collections.Counter()
        self.jobs.adopt_local_inputs()  # jobs an earlier release queued on this host: for every runner
        self.sent: dict[str, Transfer] = {}
        """Bytes sent to the workers per job this runner ran (the model once per worker, the rows)."""
        self.runner_id = f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self, once: bool = False, client: Any = None) -> int:
        """Claim and run jobs until stopped (``once``: until no job is claimable). Returns jobs run. With
        its own client, a runner whose scheduler went away for good connects again until it answers."""
        if client is not None:
            return self._loop(client, once)
        done = 0
        while not self.stopping.is_set():
            try:
                with dask_client(self.settings) as own:
                    return done + self._loop(own, once)
            except ClusterLost as exc:
                done += exc.jobs_run
            except OSError as exc:  # the scheduler does not answer yet
                log.warning("Dask scheduler unreachable (%s); retrying", type(exc).__name__)
            self.stopping.wait(RECONNECT_SECONDS)
        return done

    def _loop(self, client: Any, once: bool) -> int:
        client.run(warm_up)  # workers import the explainers now, not on a job's first chunk
        every = self.settings.audit_checkpoint_seconds
        integrator = Integrator(self.store.audit_log, every).start() if every > 0 and not once else None
        try:
            return self._claim_and_run(client, once)
        finally:
            if integrator is not None:
                integrator.stop()
                self.store.audit_log.integrate()  # the last chunks' records get their place before it exits

    def _claim_and_run(self, client: Any, once: bool) -> int:
        done = 0
        while not self.stopping.is_set():
            if client.status != "running":  # the scheduler is gone: claim nothing until it is back
                if client.status in ("closing", "closed"):
                    raise ClusterLost(done)
                self.stopping.wait(self.poll_seconds)
                continue
            job = self.jobs.claim(self.runner_id, self.settings.job_stale_seconds)
            if job is None:
                if once:
                    break
                self.stopping.wait(self.poll_seconds)
                continue
            log.info(
                "job %s: claimed at chunk %d (attempt %d)", job["id"], job["chunks_done"], job["attempts"]
            )
            self.run_job(client, job)
            done += 1
        return done

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    # -- one job ------------------------------------------------------------------------------------------
    def run_job(self, client: Any, job: dict[str, Any]) -> None:
        with Heartbeat(self.jobs, job["id"], self.runner_id, self.settings.job_heartbeat_seconds) as beat:
            try:
                finished = self._chunks(client, job, beat.lost)
            except LostJob:
                log.info("job %s: cancelled or taken over; stopped", job["id"])
                return
            except ClusterLost:
                self._give_back(job)
                return
            except Exception as exc:
                if self.jobs.get(job["id"])["status"] == CANCELLED:  # its input went with the cancel
                    log.info("job %s: cancelled; stopped", job["id"])
                    return
                log.exception("job %s: failed", job["id"])
                detail = exc.detail if isinstance(exc, CandorError) else type(exc).__name__
                if self.jobs.finish(job["id"], self.runner_id, FAILED, f"A chunk failed: {detail}"):
                    self.jobs.discard_input(job["id"])
                return
        sent = self.sent.get(job["id"])
        if sent is not None:
            log.info(
                "job %s: sent %d bytes to the workers (the model, %d bytes, to each of %d; rows %d bytes)",
                *(job["id"], sent.total, sent.model_bytes, sent.workers, sent.rows_bytes),
            )
        if finished:
            if self.jobs.finish(job["id"], self.runner_id, SUCCEEDED):
                self.jobs.discard_input(job["id"])
            log.info("job %s: succeeded", job["id"])
        else:
            self.jobs.release(job["id"], self.runner_id)
            log.info("job %s: released at chunk boundary (runner stopping)", job["id"])

    def _give_back(self, job: dict[str, Any]) -> None:
        """After ``ClusterLost``: the job back to the queue at its last chunk, not charged an attempt, unless
        this runner already gave it back ``MAX_GIVE_BACKS`` times (then it fails: something other than a
        passing outage is wrong); the runner waits a moment before claiming again."""
        job_id = job["id"]
        self._given_back[job_id] += 1
        if self._given_back[job_id] > MAX_GIVE_BACKS:
            reason = f"The Dask cluster was lost {MAX_GIVE_BACKS} times while it ran."
            if self.jobs.finish(job_id, self.runner_id, FAILED, reason):
                self.jobs.discard_input(job_id)
            return
        log.warning("job %s: the Dask cluster was lost; given back at its last chunk", job_id)
        self.jobs.release(job_id, self.runner_id)
        self.stopping.wait(RECONNECT_SECONDS)

    def _chunks(self, client: Any, job: dict[str, Any], lost: threading.Event) -> bool:
        """Compute and commit the job's remaining chunks; False when the runner is stopping."""
        total = chunk_count(job["total_rows"], job["chunk_rows"])
        summary = job["summary"] or {}
        depth = IN_FLIGHT_PER_WORKER * worker_count(client)
        pending: collections.deque[Any] = collections.deque()
        next_chunk, batched = job["chunks_done"], True
        model, transfer = self._ship(client, job)
        try:
            while next_chunk < total or pending:
                while next_chunk < total and len(pending) < depth:
                    task = self._task(job, next_chunk, batched, model)
                    transfer.rows_bytes += len(task.rows)
                    pending.append(client.submit(compute_chunk, self.worker_settings, task, pure=False))
                    next_chunk += 1
                outcome = _result(pending.popleft())
                batched = batched and outcome.batch_next
                summary = self._commit(job["id"], outcome, summary)
                if lost.is_set():
                    raise LostJob(job["id"])
                if self.stopping.is_set():
                    return False
            return True
        finally:
            if client.status == "running":  # (a client without its scheduler would wait to tell it)
                client.cancel(list(pending))
                _unship(client, model)

    def _ship(self, client: Any, job: dict[str, Any]) -> tuple[str, Transfer]:
        """The job's model version given to every worker once (``ShipModel``), its plugin's name, and the
        job's transfer count (``self.sent``)."""
        info = self.store.registry.resolve(job["model_name"], job["model_version"])
        plugin = ShipModel(job["id"], ShippedModel(info, self.store.registry.files(info)))
        try:
            client.register_plugin(plugin)
        except (OSError, CancelledError) as exc:  # no scheduler within the client's timeout
            raise ClusterLost() from exc
        model_bytes = plugin.shipped.size
        transfer = self.sent[job["id"]] = Transfer(workers=worker_count(client), model_bytes=model_bytes)
        return plugin.name, transfer

    def _task(self, job: dict[str, Any], chunk: int, batched: bool, model: str) -> ChunkTask:
        return ChunkTask(
            job_id=job["id"],
            chunk=chunk,
            first_row=chunk * job["chunk_rows"],
            model_name=job["model_name"],
            model_version=job["model_version"],
            kind=job["kind"],
            options=job["options"],
            key_id=job["key_id"],
            batched=batched,
            rows=self.jobs.input_chunk(job["id"], chunk),
            model=model,
        )

    def _commit(self, job_id: str, outcome: ChunkOutcome, summary: dict[str, Any]) -> dict[str, Any]:
        """Progress, the chunk with its records and their blobs, all or nothing."""
        updated = {
            "acc": merge(summary.get("acc", {}), outcome.summary),
            "explanation": summary.get("explanation") or outcome.explanation,
        }
        progress = ChunkProgress(outcome.chunk, outcome.rows, outcome.errors)
        with self.store.sessions.begin() as session:
            take_write_turn(session)  # on SQLite, before the progress update writes
            self.jobs.advance(session, job_id, self.runner_id, progress, updated)
            if outcome.blobs:
                self.store.audit.lock(session)  # blobs under the log's lock: no collection in between
                audit_blobs.write(session, [Blob(sha, memoryview(data)) for sha, data in outcome.blobs])
            audit_chunks.write(session, outcome.packed)
            self.jobs.add_chunk(session, job_id, outcome.chunk, outcome.packed.sha256, outcome.rows)
        return updated

"""What a job's Dask worker is given: the runner's limits without its places or secrets, each chunk's rows,
and the model version's files (verified on the worker), so it computes a chunk with no data dir and no
database. Separate processes in their own namespaces: tests/test_jobs_external_cluster.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pytest

from api.demo import LOAN_TARGET, german_credit
from api.jobs.compute import ChunkTask, compute_chunk, for_workers
from api.service.explain_request import ExplainRequest
from api.service.explanations import ExplanationService
from api.settings import Settings
from model_store import audit_chunks
from model_store.errors import IntegrityError
from model_store.job_inputs import to_ipc
from model_store.shipped import ShippedModel, load_shipped
from model_store.store import Store
from model_store.stored_form import leaf_hash_hex

ROWS = 25
Shipped = tuple[ShippedModel, Settings, ExplanationService]


@pytest.fixture
def shipped_loan(
    demo_dir: Path, tmp_path: Path
) -> Iterator[tuple[ShippedModel, Settings, ExplanationService]]:
    """The loan version as a runner ships it, and the service over the store it came from."""
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    settings = Settings.load({"data_dir": data}, environ={})
    store = Store(data, settings.resolved_database_url)
    info = store.registry.resolve("loan", 1)
    yield ShippedModel(info, store.registry.files(info)), settings, ExplanationService(store, settings)
    store.close()


def loan_rows(n: int) -> list[dict[str, Any]]:
    frame = german_credit().drop(columns=[LOAN_TARGET]).head(n)
    return frame.to_dict("records")  # type: ignore[no-any-return]


def test_a_worker_is_told_no_place_address_or_secret() -> None:
    settings = Settings.load(
        {
            "data_dir": "/srv/candor-private",
            "database_url": "postgresql+psycopg://candor:db-secret@db.internal/candor",
            "audit_key_file": "/srv/keys/signing.key",
            "artifact_store": "s3://candor-private-bucket/artifacts",
            "rate_limit_storage": "redis://:redis-secret@cache.internal:6379",
            "dask_scheduler": "tcp://scheduler.internal:8786",
            "max_cf_budget_ms": 1234,
        },
        environ={},
    )
    told = repr(for_workers(settings))
    for secret in ("candor-private", "db-secret", "internal", "signing.key", "redis-secret", "s3://"):
        assert secret not in told
    assert for_workers(settings).max_cf_budget_ms == 1234, "the limits are the runner's"


def test_a_chunk_is_computed_with_no_data_dir_and_no_database(
    shipped_loan: Shipped, tmp_path: Path, monkeypatch: Any
) -> None:
    shipped, settings, service = shipped_loan
    rows = loan_rows(ROWS)
    expected = service.compute(ExplainRequest.recorded("shap", "loan", "1", rows, {}))[1].to_dict()
    service.store.close()
    shutil.rmtree(settings.data_dir)  # nothing of the runner's left on this machine
    empty = tmp_path / "worker"
    empty.mkdir()
    monkeypatch.chdir(empty)
    rows_ipc = to_ipc(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False))
    job_id = "00000000-0000-4000-8000-00000000000a"
    task = ChunkTask(job_id, 0, 0, "loan", 1, "shap", {}, None, True, rows_ipc, model="")
    outcome = compute_chunk(for_workers(settings), task, shipped)
    assert outcome.rows == ROWS and outcome.errors == 0
    assert list(empty.iterdir()) == [] and not settings.data_dir.exists(), "the worker wrote nothing here"
    raw = audit_chunks.unpacked(outcome.packed.sha256, outcome.packed.size, outcome.packed.data)
    lines = list(audit_chunks.lines(raw))
    records = [orjson.loads(line) for line in lines]
    got = [r["explanation"]["results"][0]["attributions"] for r in records]
    want = [result["attributions"] for result in expected["results"]]
    assert got == want, "each row's record holds what the service computes for it"
    assert all(r["recorded_at"] >= r["explanation"]["created_at"] for r in records), "recorded once computed"
    assert [row["leaf_hash"] for row in outcome.packed.rows] == [leaf_hash_hex(line) for line in lines]


def test_a_shipped_file_that_does_not_match_its_sha256_is_refused(
    shipped_loan: Shipped,
) -> None:
    shipped = shipped_loan[0]
    for name, data in shipped.files.items():
        tampered = ShippedModel(shipped.info, {**shipped.files, name: data[:-1] + bytes([data[-1] ^ 1])})
        with pytest.raises(IntegrityError):
            load_shipped(tampered)
    with pytest.raises(IntegrityError):
        load_shipped(ShippedModel(shipped.info, {}))
    assert load_shipped(shipped).feature_order, "the untouched files load"

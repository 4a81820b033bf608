"""Typed settings read from ``CANDOR_*`` environment variables, overridable by ``create_app({...})``."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_store.archive_limits import ArchiveLimits

ENV_PREFIX = "CANDOR_"
AUDIT_ATTENTION = ("digest", "full")
"""What an attention record keeps: the weights' sha256 only, or their bytes too."""
EMPTY_IS_A_VALUE = {"rate_limit", "warm_models"}
"""Settings for which an empty variable means something (no rate limit) rather than "use the default"."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of the service; each field reads ``CANDOR_<FIELD_NAME_UPPER>``."""

    data_dir: Path = Path("./var")
    """Where the SQLite file and the artifacts live."""
    database_url: str = ""
    """SQLAlchemy URL; empty means ``sqlite:///<data_dir>/candor.db``."""
    max_instances: int = 5000
    """Most instances one predict or explain request may carry."""
    max_body_bytes: int = 16 * 1024 * 1024
    """Largest JSON request body (413 above it, chunked bodies included)."""
    max_upload_bytes: int = 256 * 1024 * 1024
    """Largest multipart registration upload."""
    model_cache_size: int = 8
    """Loaded model versions kept per worker (least recently used evicted)."""
    artifact_store: str = ""
    """Where registered versions' files are stored, by sha256: empty for ``<data_dir>/artifacts`` (one
    host), ``database`` (the database's ``artifact_parts`` table), or an fsspec URL (``s3://bucket/prefix``,
    ``gs://...``, ``file:///dir``; credentials from the environment). Each host caches them under
    ``<data_dir>/artifact-cache``."""
    max_shap_evals: int = 4096
    """Upper bound on model evaluations per row for permutation and kernel SHAP."""
    max_shap_work: int = 20_000_000
    """Most model evaluations (rows x max_evals x background rows) one permutation or kernel SHAP request may
    cost; refused with 422 above it, before computing."""
    max_background_rows: int = 200
    """Upper bound on reference rows used as background by model-agnostic SHAP."""
    max_cf_instances: int = 50
    """Most instances one counterfactual or reasons request may carry."""
    max_cf_budget_ms: int = 20_000
    """Upper bound on a counterfactual request's ``budget_ms`` (kept below the gunicorn timeout)."""
    torch_threads: int = 1
    """torch intra-op threads per worker process (text models)."""
    booster_threads: int = 1
    """Threads per XGBoost or LightGBM call (TreeSHAP contributions, predictions): 1 when every core has a
    busy request thread; the cores per busy request thread otherwise (one worker, large batches)."""
    max_archive_members: int = ArchiveLimits.max_members
    """Most files in a text model upload."""
    max_archive_bytes: int = ArchiveLimits.max_bytes
    """Largest uncompressed text model upload."""
    max_archive_ratio: int = ArchiveLimits.max_ratio
    """Most bytes an uploaded archive (a text model's zip or tar, a skops file) may expand to per byte
    uploaded; checked on the declared sizes before anything is expanded, then on the bytes written."""
    max_skops_schema_bytes: int = ArchiveLimits.max_skops_schema_bytes
    """Largest ``schema.json`` a skops upload may declare (skops parses it whole before any check)."""
    max_onnx_bytes: int = ArchiveLimits.max_onnx_bytes
    """Largest ONNX model upload (refused before it is parsed)."""
    max_onnx_nodes: int = ArchiveLimits.max_onnx_nodes
    """Most nodes an uploaded ONNX graph may have, subgraphs included."""
    max_onnx_tensor_bytes: int = ArchiveLimits.max_onnx_tensor_bytes
    """Largest tensor an uploaded ONNX graph may make, as shape inference sizes it before any session is
    created (an open batch dimension counted for 256 rows)."""
    max_text_instances: int = 32
    """Most texts one attention or attributions request may carry."""
    max_text_chars: int = 100_000
    """Longest text (characters) any request may carry; refused before tokenising."""
    max_attention_values: int = 2_000_000
    """Most attention weights (layers x heads x tokens^2) one text may return."""
    rate_limit: str = "36000/minute"
    """Requests per API key (``limits`` notation, e.g. ``100/second``), a moving window; empty or ``off``: no
    limit. Counted per worker process with the in-memory storage (one worker may receive all of a frontend's
    keep-alive connections, so size it for the key's whole rate), across workers and hosts with Redis. The
    default, 600 a second, is twice what 4 busy clients reach on one 2-vCPU host (README, rate limits)."""
    rate_limit_storage: str = "memory://"
    """Where rate-limit counters live: memory://, or redis://host:6379 to share them across workers."""
    retention_days: int = 0
    """Explanation records older than this are removed by ``candor audit purge`` (0 keeps them forever)."""
    audit_key_file: str = ""
    """Where the checkpoint signing key lives (a file of mode 0600, kept out of the database; ``candor audit
    init`` creates it); empty: ``<data_dir>/audit/signing.key``."""
    audit_attention: str = "digest"
    """What an attention record keeps of the weights: ``digest`` (each array's sha256, dtype and shape; no
    bytes) or ``full`` (the bytes too, as blobs). A model's manifest ``audit_attention`` wins when set."""
    audit_checkpoint_seconds: float = 2.0
    """How often each server process integrates new records into the audit log's tree and signs a
    checkpoint when the tree grew (0: only on demand)."""
    job_chunk_rows: int = 1000
    """Rows per chunk of a batch job (one Dask task, one transaction of audit records and progress)."""
    max_job_rows: int = 1_000_000
    """Most rows one batch job may hold (413 above)."""
    dask_scheduler: str = ""
    """Address of an external Dask scheduler for ``candor jobs run``; empty starts a LocalCluster."""
    dask_workers: int = 2
    """Worker processes (one thread each) of the runner's LocalCluster."""
    dask_dashboard: str = ""
    """``host:port`` where the runner's LocalCluster serves Dask's dashboard (e.g. ``127.0.0.1:8787``); empty:
    no dashboard, and no HTTP server on the scheduler or its workers."""
    job_heartbeat_seconds: int = 5
    """How often a runner refreshes the heartbeat of the job it holds."""
    job_stale_seconds: int = 60
    """A running job whose heartbeat is older than this is reclaimed by another runner."""
    bind: str = "127.0.0.1:8000"
    """Address gunicorn binds."""
    workers: int = 2
    """gunicorn worker processes."""
    threads: int = 4
    """Threads per gunicorn worker."""
    timeout: int = 60
    """gunicorn worker timeout in seconds; explanation budgets stay below it."""
    max_request_line: int = 8190
    """Longest HTTP request line (method, path with query, version) gunicorn accepts, 1-8190 bytes; a longer
    one is a 414 problem document."""
    max_requests: int = 2000
    """Requests a gunicorn worker serves before it is replaced (plus up to 10% jitter; 0: never)."""
    warm_models: str = "tabular"
    """What a gunicorn worker loads and warms before it accepts requests: ``tabular`` (every tabular model's
    production version, else its latest), ``all`` (text models too), model names separated by commas, or
    empty / ``off`` (nothing: models load on their first request)."""
    log_level: str = "info"
    """Log level of the service."""
    method_settings: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """The settings explanation methods declare themselves (``MethodSpec.settings``: name -> default), each
    read from ``CANDOR_<NAME_UPPER>`` like the fields above; read them with ``method_setting``."""

    def __post_init__(self) -> None:
        if self.audit_attention not in AUDIT_ATTENTION:
            raise ValueError(
                f"CANDOR_AUDIT_ATTENTION must be one of {', '.join(AUDIT_ATTENTION)}, "
                f"not {self.audit_attention!r}."
            )

    def method_setting(self, name: str) -> int:
        """A method's own setting (its spec's default, or the environment's, or ``create_app``'s)."""
        if name in self.method_settings:
            return self.method_settings[name]
        return _method_defaults()[name]  # a Settings built directly, not by ``load``

    @property
    def cf_budget_cap_ms(self) -> int:
        """``max_cf_budget_ms``, but never within 5 s of the worker timeout."""
        return max(100, min(self.max_cf_budget_ms, self.timeout * 1000 - 5000))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'candor.db').resolve()}"

    @property
    def resolved_audit_key_file(self) -> Path:
        """``audit_key_file``, or ``<data_dir>/audit/signing.key`` when it is empty."""
        return Path(self.audit_key_file) if self.audit_key_file else self.data_dir / "audit" / "signing.key"

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Defaults, then ``CANDOR_*`` variables, then explicit overrides (lower-case field names)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is not None and (raw != "" or field.name in EMPTY_IS_A_VALUE):
                values[field.name] = _coerce(field, raw)
        declared = _method_defaults()
        methods = {
            name: int(environ.get(ENV_PREFIX + name.upper()) or default) for name, default in declared.items()
        }
        for key, value in (overrides or {}).items():
            if key in declared:
                methods[key] = int(value)
            elif key not in {f.name for f in dataclasses.fields(cls)}:
                raise KeyError(f"unknown setting {key!r}")
            else:
                values[key] = value
        values.setdefault("method_settings", methods)
        if "data_dir" in values:
            values["data_dir"] = Path(values["data_dir"])
        return cls(**values)


def _method_defaults() -> dict[str, int]:
    """Every setting the registered methods declare, with its default."""
    from api.methods.registry import specs

    return {name: default for spec in specs() for name, default in spec.settings.items()}


def _coerce(field: dataclasses.Field[Any], raw: str) -> Any:
    default = field.default
    if isinstance(default, bool):
        return raw.lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, Path):
        return Path(raw)
    return raw

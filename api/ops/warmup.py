"""Warm a gunicorn worker before it accepts requests: load the models it will serve and build what their first
predict and explain requests would otherwise build while the client waits (explainer modules imported, the
TreeSHAP/linear backends and their verified path tables, the out-of-distribution detector, the counterfactual
search, the fast encoder, for text models the tokenizer and weights).

What is warmed is ``CANDOR_WARM_MODELS``: ``tabular`` (the default) warms every tabular model at its
production version (its latest where none is promoted); ``all`` adds text models (hundreds of MB and seconds
of torch each); a comma-separated list names the models; empty or ``off`` warms nothing. Each model is one
predict and one explanation per method its spec marks ``warm`` (SHAP, counterfactuals) on its first reference
row, through the explainers themselves (so no explanation is recorded or counted as served); a model that
fails to warm is logged and skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any

from prometheus_client import Counter

from api.methods.registry import specs
from api.service.explanations import ExplanationService
from explainers.ood import attach as attach_ood
from explainers.rows import tabular_rows
from model_store.errors import CandorError
from model_store.versions import VersionInfo

log = logging.getLogger("candor.warmup")
WARMED = Counter(
    "candor_warmed_versions_total", "Model versions a worker warmed before serving.", ["flavour"]
)
OFF = {"", "off", "none"}
TEXT_PROBE = [{"text": "warm-up"}]


def warm_targets(service: ExplanationService, choice: str) -> list[VersionInfo]:
    """The versions ``choice`` (a ``CANDOR_WARM_MODELS`` value) names: production, else latest, per model."""
    wanted = choice.strip().lower()
    if wanted in OFF:
        return []
    registry = service.store.registry
    names = [m["name"] for m in registry.list_models()]
    if wanted not in ("tabular", "all"):
        listed = {name.strip() for name in choice.split(",") if name.strip()}
        names = [name for name in names if name in listed]
    targets = []
    for name in names:
        try:
            targets.append(registry.resolve(name, "production"))
        except CandorError:
            with contextlib.suppress(CandorError):  # no version at all: nothing to warm
                targets.append(registry.resolve(name, "latest"))
    return [t for t in targets if wanted != "tabular" or t.flavour == "tabular"]


def warm(service: ExplanationService, choice: str) -> dict[str, Any]:
    """Warm every target; returns what was warmed (``name:version``), what failed, and the seconds taken."""
    started = time.perf_counter()
    warmed: list[str] = []
    failed: list[str] = []
    try:
        targets = warm_targets(service, choice)
    except Exception:  # e.g. the database is down: the worker starts cold rather than not at all
        log.exception("warm-up skipped: the models could not be listed")
        targets = []
    for info in targets:
        label = f"{info.name}:{info.version}"
        try:
            _warm_version(service, info)
        except Exception:  # a model that cannot warm is served (and fails) as it would be without warm-up
            log.exception("warm-up failed", extra={"model": label})
            failed.append(label)
            continue
        WARMED.labels(info.flavour).inc()
        warmed.append(label)
    return {"warmed": warmed, "failed": failed, "seconds": round(time.perf_counter() - started, 3)}


def _warm_version(service: ExplanationService, info: VersionInfo) -> None:
    model = service.store.registry.load(info)
    if info.flavour == "text":
        from model_store.text.model import set_torch_threads

        set_torch_threads(service.settings.torch_threads)
        model.predictions(model.validate(TEXT_PROBE, truncate=True))
        return
    row = json.loads(model.reference.head(1).to_json(orient="records"))
    model.predictions(model.validate(row))
    rows = tabular_rows(model, row)
    for spec in specs():
        if not (spec.warm and spec.applies(model)):
            continue
        explanation = spec.explainer().explain(info, model, rows, {}, spec.limits(service.settings))
        attach_ood(model, explanation, rows)

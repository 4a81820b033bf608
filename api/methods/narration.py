"""Plain-language summaries of an explanation's results, written by its method's narrative
(``explainers.narratives`` holds the sentences and rounding rules)."""

from __future__ import annotations

from typing import Any

from api.methods.registry import by_envelope_kind
from api.methods.spec import MethodSpec, Narrative
from explainers.narratives import Names, effort_scales
from model_store.errors import InvalidInput
from model_store.manifest import Manifest


def narrate(spec: MethodSpec, explanation: Any, model: Any) -> None:
    """Put a ``summary`` into every result of ``explanation`` (in place, before it is recorded)."""
    scales = effort_scales(model) if spec.needs_effort_scales else None
    texts = written(spec, explanation.to_dict(), model.manifest, scales)
    for result, text in zip(explanation.results, texts, strict=True):
        result["summary"] = text


def summaries(
    envelope: dict[str, Any], manifest: Manifest, scales: dict[str, float] | None = None
) -> list[str]:
    """One summary per result of ``envelope`` (a pure function of the envelope, the manifest and, for
    counterfactuals, the per-feature effort scales)."""
    spec = by_envelope_kind(envelope["kind"])
    if spec is None:
        raise InvalidInput.field("narrative", f"No narrative for {envelope['kind']} explanations.")
    return written(spec, envelope, manifest, scales)


def written(
    spec: MethodSpec, envelope: dict[str, Any], manifest: Manifest, scales: dict[str, float] | None
) -> list[str]:
    """``spec``'s narrative of every result of ``envelope`` (a 422 naming ``narrative`` when it has none)."""
    if spec.narrative is None:
        raise InvalidInput.field("narrative", f"No narrative for {envelope['kind']} explanations.")
    context = Narrative(Names(manifest), scales or {})
    return [spec.narrative(result, envelope, context) for result in envelope["results"]]

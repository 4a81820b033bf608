"""Captum token attributions of a text classifier (``explainers.captum_text``)."""

from __future__ import annotations

from typing import Any

from api.methods.spec import MethodSpec, Narrative, Picture
from api.methods.text_rows import text_accumulate, text_finalize, text_instances
from api.schemas.text import AttributionsRequestSchema, TextExplanationSchema
from explainers.narratives import token_attribution_summary


def narrative(result: dict[str, Any], envelope: dict[str, Any], _context: Narrative) -> str:
    return token_attribution_summary(result, envelope)


SPEC = MethodSpec(
    name="attributions",
    envelope_kind="token_attribution",
    flavour="text",
    adapter="explainers.captum_text:CaptumExplainer",
    request_schema=AttributionsRequestSchema,
    response_schema=TextExplanationSchema,
    summary="Captum token attributions of a text classifier, also merged into words with character offsets.",
    max_instances=text_instances,
    instances_noun="texts",
    caps=lambda s: {"budget_ms": s.cf_budget_cap_ms},
    cap_units={"budget_ms": " ms"},
    probe_options={"n_steps": 1},
    accumulate=text_accumulate,
    finalize=text_finalize,
    replay_tolerance=1e-5,
    narrative=narrative,
    picture=Picture("text"),
    example={"n_steps": 8},
)

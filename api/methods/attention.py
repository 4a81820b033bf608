"""Attention weights of a text classifier (``explainers.attention``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.methods.spec import MethodSpec, Narrative, Picture
from api.methods.text_rows import text_accumulate, text_finalize, text_instances
from api.schemas.text import AttentionHttpRequestSchema, AttentionRequestSchema, TextExplanationSchema
from explainers.narratives import attention_summary


def safetensors_answer(envelope: dict[str, Any], dumps: Callable[[Any], bytes]) -> bytes | None:
    """With ``encoding: "safetensors"``: the weights as the file's tensors, the envelope as JSON in its
    ``__metadata__["explanation"]``."""
    if envelope["method"]["params"].get("encoding") != "safetensors":
        return None
    from model_store.array_codec import safetensors_body

    return safetensors_body(envelope, dumps)


def narrative(result: dict[str, Any], envelope: dict[str, Any], _context: Narrative) -> str:
    return attention_summary(result, envelope)


SPEC = MethodSpec(
    name="attention",
    envelope_kind="attention",
    flavour="text",
    adapter="explainers.attention:AttentionExplainer",
    request_schema=AttentionHttpRequestSchema,
    job_schema=AttentionRequestSchema,
    response_schema=TextExplanationSchema,
    summary=(
        "Attention weights of a text classifier for selected layers and heads (rows sum to 1).\n\n"
        'With ``encoding: "safetensors"`` the answer is a safetensors file (application/octet-stream): the\n'
        'weights as its tensors, the envelope as JSON in its ``__metadata__["explanation"]``.'
    ),
    max_instances=text_instances,
    instances_noun="texts",
    limits=lambda s: {"max_values": s.max_attention_values},
    accumulate=text_accumulate,
    finalize=text_finalize,
    replay_tolerance=1e-6,
    narrative=narrative,
    picture=Picture("attention", query=("view", "layer", "head")),
    arrays_out_of_line=True,
    file_answer=safetensors_answer,
    file_suffix="safetensors",
    file_description="with encoding safetensors a safetensors file",
    file_example="(a safetensors file; see the request's encoding)",
    example={"aggregate": "mean", "rollout": True},
)

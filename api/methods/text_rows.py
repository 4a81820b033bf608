"""What the two text methods share: their instance cap and their job summary (truncated texts, tokens)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.methods.spec import Acc, add

if TYPE_CHECKING:
    from api.settings import Settings


def text_instances(settings: Settings) -> int:
    return int(settings.max_text_instances)


def text_accumulate(acc: Acc, result: dict[str, Any], _feature_order: list[str] | None) -> None:
    add(acc, ("tokens",), [float(len(result.get("tokens", []))), 1.0])
    if result.get("truncated"):
        add(acc, ("truncated",), 1)


def text_finalize(acc: Acc) -> dict[str, Any]:
    tokens = acc.get("tokens")
    return {
        "truncated": int(acc.get("truncated", 0)),
        "mean_tokens": tokens[0] / tokens[1] if tokens and tokens[1] else None,
    }

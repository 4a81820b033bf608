"""What a record says about a remote model (``format: remote``): its protocol, endpoint name and remote model
name (never the URL or the auth header, which only the environment holds), and, for an explanation
answered over the API, how many requests its computation sent and what the predictor answered for the
explained rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model_store.predictors.calls import Tally
from model_store.versions import VersionInfo


def is_remote(info: VersionInfo) -> bool:
    return info.flavour == "tabular" and info.manifest_data.get("format") == "remote"


def remote_statement(info: VersionInfo) -> dict[str, Any] | None:
    """The predictor behind ``info`` as the manifest names it (None for a model held here)."""
    if not is_remote(info):
        return None
    predictor = info.manifest_data["predictor"]
    keys = ("protocol", "endpoint", "model", "version")
    return {key: predictor[key] for key in keys if predictor.get(key) is not None}


def remote_answer(
    info: VersionInfo, loaded: Callable[[], Any], explained: Callable[[], list[Any]], tally: Tally
) -> dict[str, Any] | None:
    """The requests ``tally`` counted and the predictor's answer for the rows ``explained`` returns (of the
    model ``loaded`` returns: what it answered during the explanation, asked in one more request only for
    rows it was not asked); None for a model held here (neither is called)."""
    if not is_remote(info):
        return None
    answer: dict[str, Any] = {"requests": tally.requests}
    instances = explained()
    if instances:
        model = loaded()
        rows = model.validate(instances)
        answer["answered"] = model.describe_predictions(model.predict_encoded(model.encode(rows)))
    return answer

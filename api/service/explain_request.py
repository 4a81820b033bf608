"""One explanation asked for, as the views build it and the service, jobs and replays run it."""

from __future__ import annotations

import dataclasses
from typing import Any

NARRATIVE = "narrative"
"""A record keeps the narrative flag among the options, so a replay recomputes the summaries."""


@dataclasses.dataclass(frozen=True)
class ExplainRequest:
    """``method`` on ``instances`` of model ``model`` at ``version`` (the version to compute on; ``asked``:
    as the client named it, e.g. ``production`` or KServe's ``default``, which is what a retry repeats), with
    the client's ``options`` (the method's schema; never the server's limits), the plain-language summaries
    when ``narrative``, for API key ``key_id``, once per ``idempotency_key`` when one is sent. With
    ``results_as_json`` the answer's results may come as their JSON (an ``orjson.Fragment``, the record's
    own bytes), for a caller that only serialises the envelope."""

    method: str
    model: str
    version: str
    instances: list[Any]
    options: dict[str, Any]
    narrative: bool = False
    asked: str | None = None
    key_id: str | None = None
    idempotency_key: str | None = None
    results_as_json: bool = False

    @property
    def asked_version(self) -> str:
        return self.asked if self.asked is not None else self.version

    @property
    def recorded_options(self) -> dict[str, Any]:
        """The options as a record keeps them (with ``narrative: true`` when asked)."""
        return {**self.options, NARRATIVE: True} if self.narrative else self.options

    @classmethod
    def recorded(
        cls, method: str, model: str, version: str, instances: list[Any], options: dict[str, Any]
    ) -> ExplainRequest:
        """The request a record (or a job, whose options are kept the same way) describes."""
        client = {k: v for k, v in options.items() if k != NARRATIVE}
        return cls(method, model, version, instances, client, narrative=bool(options.get(NARRATIVE)))

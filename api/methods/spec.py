"""What an explanation method declares, so that the service, jobs, recording, replay, narratives, pictures,
the OpenAPI document and the views ask it instead of branching on the method's name.

A method is one module under ``api.methods`` holding a ``SPEC`` and one line in ``api.methods.registry``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from marshmallow import Schema

from explainers.plots import Drawer

if TYPE_CHECKING:
    from api.settings import Settings
    from explainers.base import Explainer
    from explainers.envelope import Explanation
    from explainers.narratives import Names

Acc = dict[str, Any]
"""A job summary accumulator: dicts of numbers or equal-length number lists (``api.jobs.summaries.merge``)."""
DEFAULT_REPLAY_TOLERANCE = 1e-9


def add(acc: Acc, path: tuple[str, ...], amount: float | list[float]) -> None:
    """Add ``amount`` (a number, or a list added element-wise) at ``path`` of a summary accumulator."""
    node = acc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    last = path[-1]
    if isinstance(amount, list):
        current = node.setdefault(last, [0.0] * len(amount))
        node[last] = [a + b for a, b in zip(current, amount, strict=True)]
    else:
        node[last] = node.get(last, 0) + amount


EMPTY: Mapping[str, Any] = MappingProxyType({})


def _no_settings(_settings: Settings) -> dict[str, Any]:
    return {}


def _unbounded(_settings: Settings) -> int | None:
    return None


def _never(_explanation: Explanation) -> bool:
    return False


def _add_nothing(_acc: Acc, _result: dict[str, Any], _feature_order: list[str] | None) -> None:
    return None


def _no_figures(_acc: Acc) -> dict[str, Any]:
    return {}


def _as_sent(instances: list[Any], options: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    return instances, options


def _no_columns(_options: dict[str, Any]) -> dict[str, str]:
    return {}


@dataclasses.dataclass(frozen=True)
class Narrative:
    """What a narrative writer gets besides the result and its envelope: the manifest's display names and
    units, and (for methods that ask for them) the per-feature effort scales of counterfactual changes."""

    names: Names
    scales: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Picture:
    """The picture of one result of a record: a drawer (a name of ``explainers.plots.DRAWERS`` or the method's
    own ``explainers.plots.Drawer``) and what it is drawn from besides the result and its envelope."""

    drawer: str | Drawer
    query: tuple[str, ...] = ()
    """Query parameters of the plot route that apply (any other given is a 422 naming it)."""
    names: bool = False
    """The manifest's display names and units (``names``)."""
    scales: bool = False
    """The per-feature effort scales of counterfactual changes (``scales``)."""
    values: bool = False
    """The explained instance's raw values from the recorded request (``values``; None when not kept)."""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One explanation method. ``name`` is its route (``/explain/<name>``), record kind and job kind."""

    name: str
    envelope_kind: str
    """``Explanation.kind`` of what it returns."""
    flavour: str
    """The model flavour it explains (``tabular`` or ``text``)."""
    adapter: str
    """``module:Class`` of its ``explainers.base.Explainer``, imported when first used."""
    request_schema: type[Schema]
    """The explain route's body: ``instances`` and the options."""
    response_schema: type[Schema]
    summary: str
    """The explain route's OpenAPI summary (first line) and description (the rest)."""
    route: str | None = None
    """Its route under the version when not ``/explain/<name>`` (``path``)."""
    job_schema: type[Schema] | None = None
    """A job's options (``instances`` excluded); default ``request_schema``."""
    settings: Mapping[str, int] = dataclasses.field(default_factory=lambda: EMPTY)
    """Settings of its own (``name: default``), read from ``CANDOR_<NAME_UPPER>``
    (``Settings.method_setting``): a new method's caps need no edit of ``api.settings``."""
    instances_optional: bool = False
    """Whether a request may send no instances (the method then takes its rows from the version's reference
    data, as its options say); rows that are sent are counted as for every method."""
    max_instances: Callable[[Settings], int | None] = _unbounded
    """Instances per request, below the service-wide ``max_instances``."""
    instances_noun: str = "instances"
    """What its instances are called in the 422 of ``max_instances`` ("texts")."""
    caps: Callable[[Settings], dict[str, int]] = _no_settings
    """Client options bounded by settings (``option: most``), checked on explain and job submission."""
    cap_units: Mapping[str, str] = dataclasses.field(default_factory=lambda: EMPTY)
    """The unit a cap's 422 names after its number (``{"budget_ms": " ms"}``)."""
    limits: Callable[[Settings], dict[str, Any]] = _no_settings
    """Server limits the adapter gets beside the client's options (never recorded as options)."""
    probe_options: Mapping[str, Any] = dataclasses.field(default_factory=lambda: EMPTY)
    """What makes a job's probe on one reference row cheap (the caps are checked apart)."""
    warm: bool = False
    """Whether a worker's warm-up runs it on a reference row (builds it once before the first request)."""
    batched: bool = False
    """Whether a job tries a chunk's rows in one call (kept when ``row_independent`` says so)."""
    row_independent: Callable[[Explanation], bool] = _never
    """Whether each result of a multi-row explanation is what that row alone gets."""
    row_quality: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    """A split row's quality figures from the chunk's and the row's result (batched methods)."""
    accumulate: Callable[[Acc, dict[str, Any], list[str] | None], None] = _add_nothing
    """Adds one ok result to a job's summary accumulator (rows and labels are counted for every method)."""
    accumulate_rows: Callable[[Acc, list[tuple[int, dict[str, Any]]]], None] | None = None
    """Adds a chunk's ok results, each with its row number in the job, at once (instead of ``accumulate``)."""
    prepare: Callable[[list[Any], dict[str, Any]], tuple[list[Any], dict[str, Any]]] = _as_sent
    """The instances and options the adapter gets from those sent: what rows carry beside the model's
    features (a fairness report's outcome column) moved into the options before the rows are validated;
    the record keeps what was sent."""
    label_columns: Callable[[dict[str, Any]], dict[str, str]] = _no_columns
    """Columns of class labels a job's rows keep beside the model's, for ``prepare``: ``{column: the option
    naming it}`` from the job's options (every value must be one of the model's classes)."""
    finalize: Callable[[Acc], dict[str, Any]] = _no_figures
    """The method's figures of a job summary from its accumulator."""
    replay_tolerance: float = DEFAULT_REPLAY_TOLERANCE
    narrative: Callable[[dict[str, Any], dict[str, Any], Narrative], str] | None = None
    """One result's plain-language summary."""
    needs_effort_scales: bool = False
    picture: Picture | None = None
    """The picture drawn for one result of a record."""
    arrays_out_of_line: bool = False
    """Whether a record keeps the results' arrays as blob references (``model_store.array_codec``), their
    bytes stored once by sha256."""
    file_answer: Callable[[dict[str, Any], Callable[[Any], bytes]], bytes | None] | None = None
    """The answer as a file instead of JSON when the request asked for one (the envelope and the JSON
    serialiser in, the file's bytes or None out)."""
    file_suffix: str = ""
    file_description: str = ""
    file_example: str = ""
    example: Mapping[str, Any] = dataclasses.field(default_factory=lambda: EMPTY)
    """Options that make a small, valid request on a demo model it supports (``instances`` excluded): the
    OpenAPI document's request example, and what the rule test sends."""
    lacks: frozenset[str] = frozenset()
    """Parts it has none of on purpose (``narrative``, ``picture``, ``summary``: job summary figures); the
    rule test (``tests/test_method_rules.py``) fails for any other part left out."""

    @property
    def path(self) -> str:
        """The explain route under ``/v1/models/<name>/versions/<version>``."""
        return self.route or f"/explain/{self.name}"

    @property
    def options_schema(self) -> type[Schema]:
        return self.job_schema or self.request_schema

    def explainer(self) -> Explainer:
        """The (stateless, shared) adapter instance."""
        from explainers.registry import adapter

        return adapter(self.adapter)

    def applies(self, model: Any) -> bool:
        """Whether it explains ``model``'s flavour (without importing the adapter)."""
        return self.flavour == getattr(model, "flavour", None)

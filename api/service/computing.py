"""Computing an explanation without recording it: the part of the service a job's Dask worker runs too,
over any source of model versions (the registry, or the model a job runner shipped to its workers)."""

from __future__ import annotations

from typing import Any, Protocol

from api.methods.narration import narrate
from api.methods.registry import known
from api.methods.spec import MethodSpec
from api.service.explain_request import ExplainRequest
from api.service.metrics import EXPLANATION_SECONDS
from api.settings import Settings
from explainers.envelope import Explanation
from explainers.ood import attach as attach_ood
from explainers.rows import TabularRows, rows_of
from model_store.errors import InvalidInput
from model_store.tabular.formats.boosters import set_booster_threads
from model_store.versions import VersionInfo


class ModelSource(Protocol):
    """Where versions are resolved and loaded: ``model_store.registry.ModelRegistry`` or a shipped model."""

    def resolve(self, name: str, version: str | int) -> VersionInfo: ...

    def load(self, info: VersionInfo) -> Any: ...


class Computer:
    def __init__(self, models: ModelSource, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        set_booster_threads(settings.booster_threads)  # the boosters follow it at each call

    def _loaded(self, name: str, version: str) -> tuple[VersionInfo, Any]:
        info = self.models.resolve(name, version)
        if info.flavour == "text":
            from model_store.text.model import set_torch_threads

            set_torch_threads(self.settings.torch_threads)
        return info, self.models.load(info)

    def _check_count(self, instances: list[Any]) -> None:
        if not instances:
            raise InvalidInput.field("instances", "At least one instance is required.")
        if len(instances) > self.settings.max_instances:
            raise InvalidInput.field(
                "instances", f"At most {self.settings.max_instances} instances per request."
            )

    def compute(self, request: ExplainRequest) -> tuple[VersionInfo, Explanation]:
        """The explanation alone, with the version it was computed on (nothing recorded). The rows are
        validated once, for the adapter and the OOD flags; the method's server limits go to the adapter
        apart from the client's options. With ``narrative``, every result gets its plain-language
        ``summary`` here, so a record holds exactly what the client got and a replay recomputes it."""
        spec = known(request.method)
        self._check_limits(spec, request.instances, request.options)  # before any model is loaded or run
        info, model = self._loaded(request.model, request.version)
        if not spec.applies(model):
            raise InvalidInput.field("method", f"{spec.name} does not apply to {info.flavour} models.")
        with EXPLANATION_SECONDS.labels(spec.name).time():
            check_label_columns(info, spec.label_columns(request.options))
            instances, options = spec.prepare(request.instances, request.options)
            rows = rows_of(model, instances, options)
            explanation = spec.explainer().explain(info, model, rows, options, spec.limits(self.settings))
            if isinstance(rows, TabularRows):
                attach_ood(model, explanation, rows)  # results[i]["ood"], quality["ood"]
        if request.narrative:
            narrate(spec, explanation, model)
        return info, explanation

    def _check_limits(self, spec: MethodSpec, instances: list[Any], options: dict[str, Any]) -> None:
        """The request's size and the options the method's caps bound, each a 422 naming its field."""
        if instances or not spec.instances_optional:
            self._check_count(instances)
        most = spec.max_instances(self.settings)
        if most is not None and len(instances) > most:
            raise InvalidInput.field("instances", f"At most {most} {spec.instances_noun} per request.")
        for option, cap in spec.caps(self.settings).items():
            if (options.get(option) or 0) > cap:
                raise InvalidInput.field(option, f"At most {cap}{spec.cap_units.get(option, '')}.")
        if spec.flavour == "text":
            self._check_text_lengths(instances)

    def _check_text_lengths(self, instances: list[Any]) -> None:
        """Refuse a text longer than the cap before it is tokenised."""
        cap = self.settings.max_text_chars
        for index, row in enumerate(instances):
            text = row.get("text") if isinstance(row, dict) else None
            if isinstance(text, str) and len(text) > cap:
                raise InvalidInput.field(f"instances.{index}.text", f"At most {cap} characters.")


def check_label_columns(info: VersionInfo, labels: dict[str, str]) -> None:
    """A column of class labels the rows carry (``{column: the option naming it}``) is not one of the model's
    features (a 422 naming the option)."""
    if not labels:
        return  # (reading the manifest parses it)
    features = {feature.name for feature in info.manifest.features}
    for column, option in labels.items():
        if column in features:
            raise InvalidInput.field(option, f"{column!r} is a feature of the model, not a label column.")

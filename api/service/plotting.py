"""Pictures as the plot routes ask for them: one result of a record (its method's picture), a record's
attention in bertviz's page, a version's global importance (bars or a beeswarm) and its correlations."""

from __future__ import annotations

from typing import Any

import orjson

from api.methods.pictures import record_picture
from api.service.explain_request import ExplainRequest
from api.service.explanations import ExplanationService
from api.service.jsonbytes import dumps_bytes
from api.service.records import Allowlist, Records
from explainers import bertviz_view
from explainers.importance import AGNOSTIC_ROWS
from explainers.narratives import Names
from explainers.plots import record_result, render
from explainers.shap_backends import BACKGROUND_SEED
from explainers.shap_tabular import ShapExplainer
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

BEESWARM_ROWS = 200
"""Reference rows of a beeswarm (AGNOSTIC_ROWS when only a model-agnostic SHAP algorithm applies)."""


class Plots:
    def __init__(self, service: ExplanationService, records: Records) -> None:
        self.service = service
        self.registry = service.store.registry
        self.records = records

    def record(self, record_id: str, query: dict[str, Any], models: Allowlist) -> bytes:
        """Result ``query["instance"]`` of a record as its method's picture, in ``query["format"]``."""
        record = self.records.with_arrays(self.records.get(record_id, models))
        picture, data = record_picture(record, query, self.registry)
        return render(picture, query["format"], data)

    def bertviz(self, record_id: str, query: dict[str, Any], models: Allowlist) -> tuple[str, list[str]]:
        """An attention record's result in bertviz's ``query["view"]``: the page and its scripts' sources."""
        record = self.records.get(record_id, models)
        if record["kind"] != "attention":
            raise InvalidInput.field("record_id", f"A {record['kind']} record has no attention view.")
        record = self.records.with_arrays(record)
        result = record_result(record, query["instance"])
        view_params = bertviz_view.from_result(result, record["explanation"]["method"]["params"])
        model = f"{record['model']['name']} v{record['model']['version']}"
        title = f"{model}: bertviz {query['view']} view of record {record_id}"
        return bertviz_view.page(view_params, query["view"], title)

    def importance(self, name: str, version: str, kind: str, fmt: str) -> bytes:
        """Global importance as bars (mean |SHAP| per feature) or a beeswarm of reference rows."""
        info = self.registry.resolve(name, version)
        if info.flavour != "tabular":
            raise InvalidInput.field("method", f"importance does not apply to {info.flavour} models.")
        names = Names(info.manifest)
        if kind == "bar":
            importance = self.service.importance(name, version)
            data: dict[str, Any] = {"importance": importance, "names": names, "target": _target(info)}
            return render("importance", fmt, data)
        envelope, rows = self._reference_shap(info)
        return render("beeswarm", fmt, {"envelope": envelope, "rows": rows, "names": names})

    def correlations(self, name: str, version: str, method: str, fmt: str) -> bytes:
        """The reference data's correlations (the matrices of the profile) as a heatmap."""
        profile = self.service.profile(name, version)
        info = self.registry.resolve(name, version)
        data = {
            "profile": profile,
            "names": Names(info.manifest),
            "method": method,
            "title": f"{info.name} v{info.version}",
        }
        return render("correlations", fmt, data)

    def _reference_shap(self, info: VersionInfo) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """SHAP values (columnar) of a fixed sample of the reference rows, through the service's SHAP path
        (nothing recorded); computed once per loaded version."""
        model = self.registry.load(info)

        def compute() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            agnostic = ShapExplainer().backend(model, "auto", None, 100).stochastic
            limit = AGNOSTIC_ROWS if agnostic else BEESWARM_ROWS
            reference = model.reference
            if len(reference) > limit:
                reference = reference.sample(n=limit, random_state=BACKGROUND_SEED)
            rows = orjson.loads(dumps_bytes(reference.to_dict("records")))
            request = ExplainRequest("shap", info.name, str(info.version), rows, {"layout": "columnar"})
            _, explanation = self.service.compute(request)
            return orjson.loads(dumps_bytes(explanation.to_dict())), rows

        return model.derived.get_or_load(("plots", "beeswarm"), compute)  # type: ignore[no-any-return]


def _target(info: VersionInfo) -> str | None:
    """The class global importance is measured toward: the favourable class of a binary model (else none:
    the mean over classes, or a regressor's value)."""
    classes = info.manifest.classes or []
    if len(classes) == 2:
        return info.manifest.favourable_class or classes[1]
    return None

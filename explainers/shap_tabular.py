"""SHAP attributions for tabular models, per raw input feature, in a stated output space and target class."""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from explainers.attribution_results import Selected, columnar_groups, columnar_results, record_results
from explainers.base import NO_LIMITS, Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from explainers.rows import Rows, tabular
from explainers.shap_backends import BACKENDS, Backend, Unsupported, check_algorithm, default_space
from model_store.errors import ExplainerFailed, InvalidInput
from model_store.tabular import TabularModel
from model_store.versions import VersionInfo

AUTO_ORDER = ("tree", "linear", "permutation")
ADDITIVITY_TOLERANCE = 1e-6
SELF_CHECK_ROWS = 8
DEFAULTS: dict[str, Any] = {
    "algorithm": "auto",
    "output": None,
    "target": None,
    "top_k": None,
    "seed": 0,
    "max_evals": 512,
    "background_rows": 100,
    "layout": "records",
}


class ShapExplainer(Explainer):
    name = "shap"
    kind = "attribution"

    def backend(
        self, model: TabularModel, algorithm: str, space: str | None, background_rows: int
    ) -> Backend:
        """The built, self-checked backend for this version, algorithm and space (reused across requests)."""
        names = AUTO_ORDER if algorithm == "auto" else (check_algorithm(algorithm),)
        for name in names:
            chosen = model.resolve_space(space) if space else default_space(model, name)
            try:
                key = ("shap", name, chosen, background_rows)
                return model.derived.get_or_load(
                    key, partial(self._build, model, name, chosen, background_rows)
                )
            except Unsupported:
                continue  # this algorithm cannot explain this model exactly; try the next
        raise InvalidInput.field(
            "algorithm",
            f"No exact SHAP algorithm for this model in the {space or 'default'} output space "
            f"({algorithm}); try permutation or kernel.",
        )

    @staticmethod
    def _build(model: TabularModel, algorithm: str, space: str, background_rows: int) -> Backend:
        backend = BACKENDS[algorithm](model, space, background_rows)
        if not backend.stochastic:
            _self_check(model, backend)
        return backend

    def explain(
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        rows = tabular(rows)
        opts = _options(model, options)
        started = time.perf_counter()
        backend = self.backend(model, opts["algorithm"], opts["output"], int(opts["background_rows"]))
        if backend.stochastic:
            _check_work(opts, len(rows), limits.get("max_work"))
        records = rows.records
        target_index = model.class_index(opts["target"]) if opts["target"] is not None else None
        encoded = rows.encoded
        prepared = time.perf_counter()
        try:
            values, base = backend.run(records, encoded, int(opts["seed"]), int(opts["max_evals"]))
        except (Unsupported, ValueError, FloatingPointError) as exc:
            raise ExplainerFailed("The SHAP computation failed for these instances.") from exc
        computed = time.perf_counter()
        outputs, probabilities = _outputs(model, backend, records, encoded)
        selected = Selected.pick(
            model, values, base, outputs, probabilities, _targets(model, target_index, probabilities)
        )
        if opts["layout"] == "columnar":
            results = columnar_results(model, selected)
        else:
            results = record_results(model, records, selected, opts["top_k"])
        explanation = self._envelope(info, model, backend, opts, target_index, selected, results)
        explanation.timing_ms = {
            "prepare": _ms(prepared - started),
            "explain": _ms(computed - prepared),
            "total": _ms(time.perf_counter() - started),
        }
        return explanation

    def _envelope(
        self,
        info: VersionInfo,
        model: TabularModel,
        backend: Backend,
        opts: dict[str, Any],
        target_index: int | None,
        selected: Selected,
        results: list[dict[str, Any]],
    ) -> Explanation:
        worst = float(np.abs(selected.residual).max())
        tolerance = _tolerance(selected.outputs, backend.relative_tolerance)
        output: dict[str, Any] = {
            "space": backend.space,
            "target": opts["target"],
            "target_rule": _target_rule(model, target_index),
        }
        if opts["layout"] == "columnar":
            output["feature_order"] = model.feature_order
            groups = columnar_groups(model)
            if groups is not None:
                output["groups"] = groups
        params = {
            "seed": int(opts["seed"]),
            "max_evals": int(opts["max_evals"]) if backend.stochastic else None,
            "top_k": opts["top_k"],
            "layout": opts["layout"],
            **backend.params(),
        }
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo("shap", backend.algorithm, params, library_versions(*backend.libraries)),
            output=output,
            results=results,
            quality={
                "max_additivity_residual": worst,
                "additivity_tolerance": tolerance,
                "additivity_ok": worst <= tolerance,
            },
            timing_ms={},
        )


def _options(model: TabularModel, options: dict[str, Any]) -> dict[str, Any]:
    """Request options over the manifest's ``defaults.shap`` over the service defaults, checked together."""
    opts = {
        **DEFAULTS,
        **model.manifest.defaults.get("shap", {}),
        **{k: v for k, v in options.items() if v is not None},
    }
    if opts["layout"] == "columnar" and opts["top_k"] is not None:
        raise InvalidInput.field("top_k", "top_k applies to the records layout only.")
    if opts["target"] is not None and not model.is_classifier:
        raise InvalidInput.field("target", "Regression models have no target class.")
    return opts


def _outputs(
    model: TabularModel, backend: Backend, records: list[dict[str, Any]], encoded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The model's output in the backend's space (what attributions add up to) and its probabilities."""
    if backend.algorithm in ("tree", "linear"):
        return model.outputs_and_probabilities(backend.space, encoded)
    outputs = backend.predict(backend.codec.encode(model.frame(records)))  # type: ignore[attr-defined]
    return outputs, model.predict_encoded(encoded)


def _targets(model: TabularModel, target_index: int | None, probabilities: np.ndarray) -> np.ndarray:
    n = len(probabilities)
    if not model.is_classifier:
        return np.zeros(n, dtype=int)
    if target_index is not None:
        return np.full(n, target_index)
    if len(model.classes) == 2:
        return np.full(n, model.class_index(model.manifest.favourable_class or model.classes[1]))
    return probabilities.argmax(axis=1)


def _target_rule(model: TabularModel, target_index: int | None) -> str:
    if not model.is_classifier:
        return "regression_value"
    if target_index is not None:
        return "requested"
    return "favourable_class" if len(model.classes) == 2 else "predicted_class"


def _self_check(model: TabularModel, backend: Backend) -> None:
    """Refuse a backend whose attributions do not add up to the model's output on reference rows."""
    sample = model.reference.head(SELF_CHECK_ROWS).to_dict("records")
    encoded = model.encode(sample)
    try:
        values, base = backend.run(sample, encoded, 0, 0)
    except Exception as exc:  # any library failure means this combination is not usable
        raise Unsupported(type(exc).__name__) from exc
    outputs = model.output_matrix(backend.space, encoded)
    residual = np.abs(outputs - base - values.sum(axis=1)).max()
    if not np.isfinite(residual) or residual > _tolerance(outputs, backend.relative_tolerance):
        raise Unsupported(f"attributions do not add up (residual {residual:.2e})")


def _tolerance(outputs: np.ndarray, relative: float = ADDITIVITY_TOLERANCE) -> float:
    return relative * max(1.0, float(np.abs(outputs).max()))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _check_work(opts: dict[str, Any], rows: int, max_work: int | None) -> None:
    """Refuse, before any computing, a model-agnostic request whose model evaluations (rows x max_evals x
    background rows) exceed the service's cap: such a request would run past any budget."""
    if max_work is None:
        return
    work = rows * int(opts["max_evals"]) * int(opts["background_rows"])
    if work > max_work:
        raise InvalidInput.field(
            "instances",
            f"{rows} rows x {opts['max_evals']} evaluations x {opts['background_rows']} background rows is "
            f"{work:,} model evaluations; at most {max_work:,} per request (send fewer rows or lower them).",
        )

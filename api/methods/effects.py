"""Feature effects: partial dependence with ICE curves for tabular models.

The grid and the curves are scikit-learn's ``partial_dependence`` (``method="brute"``): per numeric feature
``grid_resolution`` points evenly spaced between two percentiles of the rows (their unique values when fewer),
per categorical or boolean feature its categories; each row's ICE curve is the model's output with the feature
set to each grid value and the others left as they are, the average curve their mean. The model is called
through its own prediction path (the pipeline's encoding, then the estimator), in the stated output space:
the probability of the target class for classifiers, the prediction for regressors.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from marshmallow import ValidationError, fields, post_load, validate, validates_schema
from scipy.stats.mstats import mquantiles

from api.methods.spec import Acc, MethodSpec, Narrative, Picture
from api.schemas.common import (
    MAX_FEATURE_NAME,
    MAX_LABEL,
    BoundedList,
    StrictSchema,
    UniqueList,
    integer,
    text,
)
from api.schemas.explain import ExplanationSchema
from api.schemas.models import ObjectRows
from api.schemas.understanding import OodFlagSchema
from explainers.base import NO_LIMITS, Explainer
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from explainers.narratives import Names, fixed, listing, space_phrase
from explainers.plots import Drawer
from explainers.rows import Rows, TabularRows, tabular
from model_store.errors import InvalidInput
from model_store.versions import VersionInfo

SETTINGS = {
    "max_effects_features": 10,
    "max_effects_grid": 100,
    "max_effects_sample": 1000,
    "max_effects_evaluations": 200_000,
}
DEFAULT_SAMPLE = 100
LIBRARIES = ("scikit-learn", "numpy", "scipy")
HISTOGRAM_BINS = 20
SHOWN_ICE = 200
"""ICE lines a picture draws at most (the first ones)."""
CAVEAT = (
    "Partial dependence shows this model's average response when one feature is changed and the others are "
    "kept as they are, not a cause in the world; with correlated features it averages over combinations "
    "that may never occur, and can mislead."
)
Records = list[dict[str, Any]]


# -- the request ---------------------------------------------------------------------------------------------
def _described(field: fields.Field, description: str) -> fields.Field:
    field.metadata = {**field.metadata, "description": description}
    return field


def _choice(values: list[str], description: str = "") -> fields.Field:
    """One of ``values``, the first by default."""
    return _described(fields.String(validate=validate.OneOf(values), load_default=values[0]), description)


class _EffectsOptions(StrictSchema):
    features = _described(
        UniqueList(text(MAX_FEATURE_NAME, min_length=1), 100, min_items=1, required=True),
        "Model features to vary (at most CANDOR_MAX_EFFECTS_FEATURES)",
    )
    grid_resolution = _described(integer(2, 10_000, load_default=20), "Points per numeric feature's grid")
    percentiles = _described(
        BoundedList(fields.Float(validate=validate.Range(0.0, 1.0)), 2, 2, load_default=lambda: [0.05, 0.95]),
        "The numeric grid's ends: [low, high] percentiles of the rows (0-1)",
    )
    target = _described(text(MAX_LABEL, allow_none=True, load_default=None), "Default: the favourable class")
    kind = _choice(["both", "average", "individual"], "The average curve, the ICE curves, or both")

    @validates_schema
    def _ordered(self, data: dict[str, Any], **_kwargs: Any) -> None:
        low, high = data.get("percentiles") or (0.0, 1.0)
        if low >= high:
            raise ValidationError("The low percentile must be below the high one.", "percentiles")


class EffectsRequestSchema(_EffectsOptions):
    instances = ObjectRows(load_default=list, metadata={"description": "Rows as {feature: value} objects"})
    data = _choice(["instances", "reference"], "The rows sent, or a sample of the reference data")
    sample = _described(
        integer(1, 1_000_000, allow_none=True, load_default=None),
        "data reference: rows drawn (default 100, at most CANDOR_MAX_EFFECTS_SAMPLE)",
    )
    seed = _described(integer(0, 2**32 - 1, allow_none=True, load_default=None), "Sample seed (default 0)")
    grid_from = _choice(["rows", "reference"], "The grid of the rows (as scikit-learn) or the reference")

    @validates_schema
    def _rows(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("data") == "reference":
            if data.get("instances"):
                raise ValidationError("Not with data: reference (the rows are drawn).", "instances")
            return
        if not data.get("instances"):
            raise ValidationError("Send at least one row, or data: reference.", "instances")
        for name in ("sample", "seed"):
            if data.get(name) is not None:
                raise ValidationError("Only with data: reference.", name)

    @post_load
    def _sample_defaults(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if data["data"] == "reference":
            data["sample"] = DEFAULT_SAMPLE if data["sample"] is None else data["sample"]
            data["seed"] = 0 if data["seed"] is None else data["seed"]
        return data


class EffectsJobSchema(_EffectsOptions):
    """A job's options: each row is explained alone, on the grid of the reference data."""

    instances = ObjectRows(load_default=list)
    grid_from = _choice(["reference"])


# -- the response --------------------------------------------------------------------------------------------
class DistributionSchema(StrictSchema):
    counts = fields.List(fields.Integer(), required=True)
    edges = _described(fields.List(fields.Float()), "numeric: the histogram's bin edges")
    categories = _described(fields.List(fields.Raw()), "categorical: the grid's categories")


class FeatureEffectSchema(StrictSchema):
    feature = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(["numeric", "categorical", "boolean"]))
    grid = fields.List(fields.Raw(), required=True)
    average = _described(fields.List(fields.Float()), "kind average or both")
    individual = _described(fields.List(fields.List(fields.Float())), "kind individual or both: one per row")
    distribution = _described(fields.Nested(DistributionSchema, required=True), "The feature over the rows")


class EffectsResultSchema(StrictSchema):
    rows = fields.Integer(required=True)
    features = fields.List(fields.Nested(FeatureEffectSchema), required=True)
    ood = _described(fields.Nested(OodFlagSchema), "The row's flags, when one row was sent")
    summary = _described(fields.String(), "With ?narrative=true")


class EffectsExplanationSchema(ExplanationSchema):
    kind = fields.String(required=True, validate=validate.OneOf(["feature_effects"]))
    results = fields.List(fields.Nested(EffectsResultSchema), required=True)


DEFAULTS: dict[str, Any] = {
    name: field.load_default() if callable(field.load_default) else field.load_default
    for name, field in EffectsRequestSchema().fields.items()
    if name not in ("features", "instances")
}
"""The request's defaults, for calls that send no options (a worker's warm-up)."""


# -- the computation -----------------------------------------------------------------------------------------
def records_of(model: Any, rows: TabularRows, opts: dict[str, Any]) -> Records:
    """The validated rows sent, or ``sample`` reference rows drawn with ``seed`` (all of them when fewer)."""
    if opts["data"] != "reference":
        return rows.records
    reference = model.reference
    sample = opts["sample"] or DEFAULT_SAMPLE
    if len(reference) > sample:
        reference = reference.sample(n=sample, random_state=opts["seed"] or 0)
    return list(reference.to_dict("records"))


def _present(values: list[Any]) -> np.ndarray:
    """The numbers among ``values``; missing ones (NaN, a feature declared ``missing: true``) are left
    out of grids and histograms, as scikit-learn leaves them out of its grid."""
    numbers = np.asarray(values, dtype=float)
    return numbers[~np.isnan(numbers)]


def grid_of(values: list[Any], categorical: bool, resolution: int, percentiles: list[float]) -> list[Any]:
    """scikit-learn's grid of one feature (``_grid_from_X``): the unique values for a categorical feature or
    when fewer than ``resolution``, else evenly spaced points between the two percentiles."""
    if categorical:
        return sorted(set(values), key=lambda v: (type(v).__name__, v))
    numbers = _present(values)
    if len(numbers) == 0:
        raise InvalidInput.field("instances", "A feature to vary is missing in every row: no grid to draw.")
    uniques = np.unique(numbers)
    if len(uniques) < resolution:
        return uniques.tolist()
    low, high = mquantiles(numbers, prob=percentiles, axis=0)
    if np.allclose(low, high):
        raise InvalidInput.field(
            "percentiles", "Too close for a feature's values: choose them further apart."
        )
    return np.linspace(low, high, num=resolution, endpoint=True).tolist()


def ice_curves(model: Any, records: Records, feature: str, grid: list[Any], column: int) -> np.ndarray:
    """(rows, grid points): each row's output with ``feature`` set to each grid value, in one model call
    through the model's own path (encoding, then the estimator); column ``column`` of its outputs."""
    varied = [{**row, feature: value} for value in grid for row in records]
    outputs = model.predict_encoded(model.encode(varied))[:, column]
    return outputs.reshape(len(grid), len(records)).T


def distribution_of(values: list[Any], categorical: bool, grid: list[Any]) -> dict[str, Any]:
    """The feature over the rows: counts per category of the grid, or a histogram."""
    if categorical:
        return {"categories": list(grid), "counts": [sum(1 for v in values if v == g) for g in grid]}
    numbers = _present(values)
    if len(numbers) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(numbers, bins=min(HISTOGRAM_BINS, len(np.unique(numbers))))
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def feature_effect(
    model: Any, records: Records, feature: str, grid: list[Any], opts: dict[str, Any]
) -> dict[str, Any]:
    """One feature's grid, average and ICE curves (as ``kind`` asks) and its distribution over the rows."""
    ftype = types_of(model)[feature]
    curves = ice_curves(model, records, feature, grid, opts["column"])
    out: dict[str, Any] = {"feature": feature, "type": ftype, "grid": grid}
    if opts["kind"] in ("average", "both"):
        out["average"] = curves.mean(axis=0).tolist()
    if opts["kind"] in ("individual", "both"):
        out["individual"] = curves.tolist()
    out["distribution"] = distribution_of([row[feature] for row in records], ftype != "numeric", grid)
    return out


def types_of(model: Any) -> dict[str, str]:
    return {spec.name: spec.type for spec in model.manifest.features}


def target_of(model: Any, target: str | None) -> tuple[int, str | None, str]:
    """(output column, target label, rule): the requested class, else the favourable class (the second
    class of a binary model that declares none); regressors have one column."""
    if not model.is_classifier:
        if target is not None:
            raise InvalidInput.field("target", "Regression models have no target class.")
        return 0, None, "regression_value"
    if target is not None:
        return model.class_index(target), target, "requested"
    label = model.manifest.favourable_class or (model.classes[1] if len(model.classes) == 2 else None)
    if label is None:
        raise InvalidInput.field("target", "Required for a multiclass model without a favourable class.")
    return model.class_index(label), label, "favourable_class"


def check_features(model: Any, features: list[str], most: int | None) -> None:
    if most is not None and len(features) > most:
        raise InvalidInput.field("features", f"At most {most} features per request.")
    for index, name in enumerate(features):
        if name not in model.feature_order:
            raise InvalidInput.field(f"features.{index}", "Not a feature of this model.")


def grids(model: Any, records: Records, opts: dict[str, Any]) -> dict[str, list[Any]]:
    """Each feature's grid, from the rows or from the whole reference data (``grid_from``)."""
    types, resolution, percentiles = types_of(model), int(opts["grid_resolution"]), list(opts["percentiles"])

    def values(name: str) -> list[Any]:
        if opts["grid_from"] == "rows":
            return [row[name] for row in records]
        return list(model.reference[name].tolist())

    return {
        name: grid_of(values(name), types[name] != "numeric", resolution, percentiles)
        for name in opts["features"]
    }


def check_work(rows: int, points: int, opts: dict[str, Any]) -> None:
    """Refuse, before the model runs, more model evaluations (rows x grid points) than ``max_evaluations``."""
    most = opts.get("max_evaluations")
    if most is not None and rows * points > most:
        raise InvalidInput.field(
            "sample" if opts["data"] == "reference" else "instances",
            f"{rows} rows x {points} grid points is {rows * points:,} model evaluations; at most {most:,} "
            "per request (fewer rows, features or grid points).",
        )


def effects(model: Any, rows: TabularRows, opts: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The result (rows and per-feature curves) and the output space of ``rows`` (or the reference sample)
    under the full options ``opts`` (with the limits ``max_features`` and ``max_evaluations``)."""
    check_features(model, opts["features"], opts.get("max_features"))
    column, label, rule = target_of(model, opts["target"])
    records = records_of(model, rows, opts)
    by_feature = grids(model, records, opts)
    check_work(len(records), sum(len(grid) for grid in by_feature.values()), opts)
    computed = {**opts, "column": column}
    result = {
        "rows": len(records),
        "features": [feature_effect(model, records, f, grid, computed) for f, grid in by_feature.items()],
    }
    space = "probability" if model.is_classifier else "raw"
    return result, {"space": space, "target": label, "target_rule": rule}


class EffectsExplainer(Explainer):
    name = "effects"
    kind = "feature_effects"

    def explain(
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        rows = tabular(rows)
        started = time.perf_counter()
        opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}, **limits}
        opts["features"] = opts.get("features") or model.feature_order[:1]  # a warm-up's call sends none
        result, output = effects(model, rows, opts)
        evaluations = result["rows"] * sum(len(effect["grid"]) for effect in result["features"])
        params = {**{k: opts[k] for k in ("features", *DEFAULTS)}, "rows": result["rows"]}
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo("effects", "partial_dependence_brute", params, library_versions(*LIBRARIES)),
            output=output,
            results=[result],
            quality={"rows": result["rows"], "evaluations": evaluations},
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3)},
        )


# -- job summary ---------------------------------------------------------------------------------------------
def curve_of(effect: dict[str, Any]) -> list[float]:
    """The average curve (the mean of the ICE curves when only they were asked for)."""
    if "average" in effect:
        return list(effect["average"])
    return list(np.asarray(effect["individual"], dtype=float).mean(axis=0).tolist())


def _added(total: list[float] | None, values: list[float]) -> list[float]:
    return values if total is None else [a + b for a, b in zip(total, values, strict=True)]


def accumulate(acc: Acc, result: dict[str, Any], _feature_order: list[str] | None) -> None:
    """Per feature, the rows and the sums of the rows' curves (a job's grid is the reference data's, the same
    for every row): numeric features as lists over the grid, categories by name."""
    rows = float(result["rows"])
    for effect in result["features"]:
        entry = acc.setdefault("effects", {}).setdefault(effect["feature"], {"rows": 0.0})
        entry["rows"] += rows
        curve = [rows * value for value in curve_of(effect)]
        if effect["type"] == "numeric":
            entry["curve"] = _added(entry.get("curve"), curve)
            entry["grid"] = _added(entry.get("grid"), [rows * value for value in effect["grid"]])
            continue
        by_category = entry.setdefault("by_category", {})
        for category, value in zip(effect["grid"], curve, strict=True):
            by_category[str(category)] = by_category.get(str(category), 0.0) + value


def finalize(acc: Acc) -> dict[str, Any]:
    """The mean curve over the job's rows, per feature."""
    curves = []
    for feature, entry in sorted(acc.get("effects", {}).items()):
        rows = entry["rows"] or 1.0
        if "curve" in entry:
            grid: list[Any] = [value / rows for value in entry["grid"]]
            average = [value / rows for value in entry["curve"]]
        else:
            grid = sorted(entry.get("by_category", {}))
            average = [entry["by_category"][category] / rows for category in grid]
        curves.append({"feature": feature, "rows": int(entry["rows"]), "grid": grid, "average": average})
    return {"mean_curves": curves}


# -- narrative and picture -----------------------------------------------------------------------------------
def feature_sentence(effect: dict[str, Any], names: Names, phrase: str) -> str:
    name, curve, grid = effect["feature"], curve_of(effect), effect["grid"]
    low, high = int(np.argmin(curve)), int(np.argmax(curve))
    span = (
        f"the average {phrase} ranges from {fixed(curve[low], 'probability')} "
        f"({names.feature_value(name, grid[low])}) to {fixed(curve[high], 'probability')} "
        f"({names.feature_value(name, grid[high])})"
    )
    if effect["type"] != "numeric" or len(curve) < 2:
        return f"Across the values of {names.display(name)}, {span}."
    rises = sum(1 for a, b in itertools.pairwise(curve) if b > a)
    falls = sum(1 for a, b in itertools.pairwise(curve) if b < a)
    trend = (
        "mostly rises" if rises > 2 * falls else "mostly falls" if falls > 2 * rises else "rises and falls"
    )
    return f"As {names.display(name)} goes up, {span}; it {'stays flat' if rises == falls == 0 else trend}."


def narrative(result: dict[str, Any], envelope: dict[str, Any], context: Narrative) -> str:
    """The range of each average curve (up to three features), where it rises or falls, and the caveat."""
    output = envelope["output"]
    classifier = output["space"] == "probability"
    phrase = space_phrase(output["space"], output["target"]) if classifier else "prediction"
    shown = result["features"][:3]
    rest = len(result["features"]) - len(shown)
    more = f" ({rest} more feature(s) in the result)" if rest else ""
    sentences = " ".join(feature_sentence(effect, context.names, phrase) for effect in shown)
    return f"Over {result['rows']} row(s){more}: {sentences} {CAVEAT}"


def draw(figure: Any, result: dict[str, Any], envelope: dict[str, Any], names: Names) -> None:
    """The first feature: its average curve over faint ICE curves, and its distribution over the rows."""
    effect, output = result["features"][0], envelope["output"]
    name, grid, numeric = effect["feature"], effect["grid"], effect["type"] == "numeric"
    x = np.asarray(grid, dtype=float) if numeric else np.arange(len(grid), dtype=float)
    curves, spread = figure.subplots(2, 1, sharex=numeric, gridspec_kw={"height_ratios": [3, 1]})
    for line in effect.get("individual", [])[:SHOWN_ICE]:
        curves.plot(x, line, color="#9e9e9e", alpha=0.25, linewidth=0.8)
    curves.plot(
        x, curve_of(effect), color="#d6604d", linewidth=2.5, marker="" if numeric else "o", label="average"
    )
    curves.set_ylabel(space_phrase(output["space"], output["target"]))
    curves.set_title(
        f"Partial dependence on {names.display(name)} ({result['rows']} rows, {envelope['model']['name']})"
    )
    curves.legend(loc="best", fontsize=10)
    distribution = effect["distribution"]
    if numeric:
        spread.stairs(distribution["counts"], distribution["edges"], fill=True, color="#4393c3")
    else:
        spread.bar(x, distribution["counts"], color="#4393c3")
        spread.set_xticks(x, [str(value) for value in grid], rotation=30, ha="right", fontsize=9)
    spread.set_xlabel(names.display(name))
    spread.set_ylabel("rows")
    others = [names.display(e["feature"]) for e in result["features"][1:]]
    if others:
        shown = listing(others[:4]) + (" and more" if len(others) > 4 else "")
        figure.suptitle(f"Also in the record: {shown}", fontsize=10)


SPEC = MethodSpec(
    name="effects",
    envelope_kind="feature_effects",
    flavour="tabular",
    adapter="api.methods.effects:EffectsExplainer",
    request_schema=EffectsRequestSchema,
    response_schema=EffectsExplanationSchema,
    summary=(
        "Feature effects: partial dependence and ICE curves (scikit-learn's brute method) over the rows\n"
        "sent or a seeded sample of the reference data, in the model's output space."
    ),
    job_schema=EffectsJobSchema,
    settings=SETTINGS,
    instances_optional=True,
    caps=lambda s: {
        "grid_resolution": s.method_setting("max_effects_grid"),
        "sample": s.method_setting("max_effects_sample"),
    },
    limits=lambda s: {
        "max_features": s.method_setting("max_effects_features"),
        "max_evaluations": s.method_setting("max_effects_evaluations"),
    },
    probe_options={"grid_resolution": 2},
    accumulate=accumulate,
    finalize=finalize,
    narrative=narrative,
    picture=Picture(Drawer("api.methods.effects:draw", (9.0, 6.0)), names=True),
    example={"features": ["duration_in_month", "purpose"], "grid_resolution": 10},
)

"""The version manifest: what a model predicts, the features it reads, and how to explain it.

Parsed from YAML or JSON by a marshmallow schema (unknown keys refused, NaN and infinity refused) into
plain dataclasses the rest of the code reads.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Literal

import orjson
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from model_store.errors import InvalidManifest
from model_store.manifest_text import load_manifest_data

TASKS = ("binary_classification", "multiclass_classification", "regression", "text_classification")
FEATURE_TYPES = ("numeric", "categorical", "boolean")
MONOTONE = ("none", "increasing", "decreasing")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
ARTIFACT_FORMATS = ("skops", "xgboost", "lightgbm", "onnx", "remote")
"""How a tabular version's model is stored (``model_store.tabular.formats`` loads each)."""

Category = str | int
PROTOCOLS = ("v1", "v2")
PREDICTOR_INPUTS = ("columns", "tensor")
ENDPOINT_PATTERN = r"^[A-Z][A-Z0-9_]{0,31}$"
REMOTE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    name: str
    type: Literal["numeric", "categorical", "boolean"]
    categories: list[Category] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    unit: str | None = None
    description: str | None = None
    display_name: str | None = None
    mutable: bool = True
    monotone: Literal["none", "increasing", "decreasing"] = "none"
    protected: bool = False
    missing: bool = False
    """Numeric features only: a row may leave the value out (``null``; NaN in reference data)."""
    bins: list[float] | None = None
    """Numeric protected features: sorted cut points that group the values for a fairness report."""


@dataclasses.dataclass(frozen=True)
class PredictorSpec:
    """A model served elsewhere (``format: remote``); its URL, timeout and auth header come from the
    environment (``CANDOR_PREDICTOR_<ENDPOINT>_*``), never from the manifest."""

    protocol: Literal["v1", "v2"]
    model: str
    """The remote model's name (in the predictor's URL path)."""
    endpoint: str
    """Short upper-case name of the environment variables holding the URL, timeout and auth header."""
    version: str | None = None
    inputs: Literal["columns", "tensor"] = "columns"
    """``columns``: one named input per feature (V2, MLServer's ``pd`` content type) or one object per row
    (V1); ``tensor``: one numeric matrix (V2 ``FP64`` input) or one list per row (V1)."""
    output: str | None = None
    """V2: the output holding the answer (requested by name); default ``predict_proba`` for classifiers,
    ``predict`` for regressors."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    task: str
    features: list[FeatureSpec] = dataclasses.field(default_factory=list)
    target: str | None = None
    classes: list[str] | None = None
    favourable_class: str | None = None
    alert_class: str | None = None
    """Text models: the label a clinician tool flags (e.g. ``urgent``)."""
    max_tokens: int | None = None
    """Text models: the most tokens (special tokens included) a text may have; longer ones are refused
    unless the request allows truncation."""
    groups: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    defaults: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    reasons: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    """Adverse-action reason catalogue: ``{feature: {code, text}}``."""
    description: str | None = None
    store_inputs: str = "full"
    """What an explanation record keeps of the request: ``full``, or ``hash`` (its sha256, for privacy)."""
    audit_attention: str | None = None
    """What this model's attention records keep of the weights, ``digest`` or ``full``; None: the
    server's ``CANDOR_AUDIT_ATTENTION``."""
    format: str = "skops"
    """Tabular models: how the artifact is stored, one of ``ARTIFACT_FORMATS``."""
    predictor: PredictorSpec | None = None
    """``format: remote``: the predictor answering for the model."""

    @property
    def is_classification(self) -> bool:
        return self.task in ("binary_classification", "multiclass_classification", "text_classification")

    @property
    def is_text(self) -> bool:
        return self.task == "text_classification"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> FeatureSpec:
        for spec in self.features:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, omitting empty optional fields."""
        data = dataclasses.asdict(self)
        data["features"] = [
            {k: v for k, v in f.items() if v is not None and (k != "missing" or v)} for f in data["features"]
        ]
        if self.format == "skops":
            del data["format"]  # the default: manifests stored before formats existed stay as they were
        if data["predictor"] is not None:
            data["predictor"] = {k: v for k, v in data["predictor"].items() if v is not None}
        if self.is_text:
            return {k: v for k, v in data.items() if v is not None and v != [] and v != {}}
        return {k: v for k, v in data.items() if v is not None}


STORE_INPUTS = ("full", "hash")
AUDIT_ATTENTION = ("digest", "full")


class FiniteFloat(fields.Float):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_nan=False, **kwargs)


class CategoryField(fields.Field):
    """A category: a string or an integer (never a bool or a float)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Category:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValidationError("Categories are strings or integers.")
        return value


class FeatureSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    type = fields.String(required=True, validate=validate.OneOf(FEATURE_TYPES))
    categories = fields.List(CategoryField(), validate=validate.Length(min=1, max=10_000))
    min = FiniteFloat()
    max = FiniteFloat()
    step = FiniteFloat(validate=validate.Range(min=0, min_inclusive=False))
    unit = fields.String()
    description = fields.String()
    display_name = fields.String()
    mutable = fields.Boolean(load_default=True)
    monotone = fields.String(load_default="none", validate=validate.OneOf(MONOTONE))
    protected = fields.Boolean(load_default=False)
    missing = fields.Boolean(load_default=False)
    bins = fields.List(FiniteFloat(), validate=validate.Length(min=1, max=100))

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("categories") is not None and data["type"] != "categorical":
            raise ValidationError("Only categorical features take categories.", "categories")
        bins = data.get("bins")
        if bins is not None and data["type"] != "numeric":
            raise ValidationError("Only numeric features take bins.", "bins")
        if bins is not None and any(b <= a for a, b in itertools.pairwise(bins)):
            raise ValidationError("Bin edges must be strictly increasing.", "bins")
        if data.get("min") is not None and data.get("max") is not None and data["min"] > data["max"]:
            raise ValidationError("min is greater than max.", "min")
        if data["type"] != "numeric" and data.get("monotone", "none") != "none":
            raise ValidationError("Only numeric features can be monotone.", "monotone")
        if data["type"] != "numeric" and data.get("missing"):
            raise ValidationError("Only numeric features can be missing.", "missing")


class ReasonSchema(Schema):
    class Meta:
        unknown = RAISE

    code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    text = fields.String(required=True, validate=validate.Length(min=1, max=500))


class PredictorSchema(Schema):
    class Meta:
        unknown = RAISE

    protocol = fields.String(required=True, validate=validate.OneOf(PROTOCOLS))
    model = fields.String(required=True, validate=validate.Regexp(REMOTE_NAME_PATTERN))
    endpoint = fields.String(required=True, validate=validate.Regexp(ENDPOINT_PATTERN))
    version = fields.String(validate=validate.Regexp(REMOTE_NAME_PATTERN))
    inputs = fields.String(validate=validate.OneOf(PREDICTOR_INPUTS))
    output = fields.String(validate=validate.Regexp(REMOTE_NAME_PATTERN))

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        if data["protocol"] == "v1" and ("output" in data or "version" in data):
            raise ValidationError("Only V2 predictors take output and version.", "output")


class ManifestSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(NAME_PATTERN))
    task = fields.String(required=True, validate=validate.OneOf(TASKS))
    target = fields.String()
    classes = fields.List(fields.String(), validate=validate.Length(min=2, max=1000))
    favourable_class = fields.String()
    alert_class = fields.String()
    max_tokens = fields.Integer(strict=True, validate=validate.Range(min=2, max=100_000))
    features = fields.List(fields.Nested(FeatureSchema), validate=validate.Length(min=1, max=5000))
    groups = fields.Dict(
        keys=fields.String(), values=fields.List(fields.String(), validate=validate.Length(min=1))
    )
    defaults = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String()))
    reasons = fields.Dict(keys=fields.String(), values=fields.Nested(ReasonSchema))
    description = fields.String()
    store_inputs = fields.String(validate=validate.OneOf(STORE_INPUTS))
    audit_attention = fields.String(validate=validate.OneOf(AUDIT_ATTENTION))
    format = fields.String(validate=validate.OneOf(ARTIFACT_FORMATS))
    predictor = fields.Nested(PredictorSchema)

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        names = [f["name"] for f in data.get("features", [])]
        if len(set(names)) != len(names):
            raise ValidationError("Feature names must be unique.", "features")
        task = data.get("task")
        classes = data.get("classes")
        if task == "text_classification":
            _check_text(data)
        elif "features" not in data:
            raise ValidationError("Tabular models declare their features.", "features")
        elif "alert_class" in data or "max_tokens" in data:
            raise ValidationError("Only text models take alert_class and max_tokens.", "alert_class")
        if task == "text_classification" and "format" in data:
            raise ValidationError("Text models are a Hugging Face directory; format is tabular.", "format")
        if (data.get("format") == "remote") != ("predictor" in data):
            raise ValidationError(
                "A remote model (format: remote) and only it names a predictor.", "predictor"
            )
        if task in ("binary_classification", "multiclass_classification", "text_classification"):
            if not classes:
                raise ValidationError("Classification models declare their classes.", "classes")
            if len(set(classes)) != len(classes):
                raise ValidationError("Class labels must be unique.", "classes")
            if task == "binary_classification" and len(classes) != 2:
                raise ValidationError("A binary model has exactly two classes.", "classes")
            if task == "binary_classification" and "favourable_class" not in data:
                raise ValidationError("A binary model names its favourable class.", "favourable_class")
            if "favourable_class" in data and data["favourable_class"] not in classes:
                raise ValidationError("Not one of the classes.", "favourable_class")
        elif classes or "favourable_class" in data:
            raise ValidationError("Only classification models have classes.", "classes")
        for group, members in (data.get("groups") or {}).items():
            unknown = [m for m in members if m not in names]
            if unknown:
                raise ValidationError(f"Unknown features: {', '.join(unknown)}", f"groups.{group}")
        _reject_non_finite(data.get("defaults") or {}, "defaults")
        for feature in data.get("reasons") or {}:
            if feature not in names:
                raise ValidationError("Not one of the features.", f"reasons.{feature}")


def _check_text(data: dict[str, Any]) -> None:
    for key in ("features", "groups", "reasons"):
        if data.get(key):
            raise ValidationError("Text models read one text; they take no features, groups or reasons.", key)
    if "max_tokens" not in data:
        raise ValidationError("Text models state the most tokens they read.", "max_tokens")
    if "alert_class" in data and data["alert_class"] not in (data.get("classes") or []):
        raise ValidationError("Not one of the classes.", "alert_class")


def _reject_non_finite(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError("NaN and infinity are not allowed.", path)
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_non_finite(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_non_finite(item, f"{path}.{index}")


def parse_manifest(data: dict[str, Any]) -> Manifest:
    """Validate a manifest mapping; ``InvalidManifest`` names each bad field."""
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:  # lone surrogates (YAML allows "\ud800") or keys that are not strings
        raise InvalidManifest.field("manifest", "not valid Unicode text or not plain data") from exc
    if b"\\u0000" in encoded:
        raise InvalidManifest.field("manifest", "NUL characters are not accepted.")
    try:
        loaded = ManifestSchema().load(data)
    except ValidationError as exc:
        raise InvalidManifest("The manifest is invalid.", flatten_messages(exc.messages, "manifest")) from exc
    features = [FeatureSpec(**f) for f in loaded.pop("features", [])]
    if "predictor" in loaded:
        loaded["predictor"] = PredictorSpec(**loaded["predictor"])
    return Manifest(features=features, **loaded)


def read_manifest_text(text: str, name: str | None = None) -> Manifest:
    """Parse YAML or JSON manifest text (JSON is YAML); with ``name``, the manifest's name must be it (and
    defaults to it)."""
    data = load_manifest_data(text)
    if not isinstance(data, dict):
        raise InvalidManifest.field("manifest", "must be a mapping")
    if name is not None:
        data.setdefault("name", name)
        if data["name"] != name:
            raise InvalidManifest.field("manifest.name", "Must equal the model name in the URL.")
    return parse_manifest(data)


def flatten_messages(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as ``{"a.0.b": [...]}``."""
    out: dict[str, list[str]] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list) and all(isinstance(m, str) for m in node):
            out.setdefault(path or "_schema", []).extend(node)
        elif isinstance(node, list):
            for child in node:
                walk(child, path)
        else:
            out.setdefault(path or "_schema", []).append(str(node))

    walk(messages, prefix)
    return out

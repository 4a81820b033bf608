"""LightGBM boosters stored as LightGBM's text model (``Booster.model_to_string()``), read in the
manifest's feature order with categories as codes (LightGBM splits on integer codes natively)."""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

import numpy as np

from model_store.archive_limits import ArchiveLimits
from model_store.errors import InvalidManifest, UnsafeArtifact
from model_store.manifest import Manifest
from model_store.tabular.formats.base import ArtifactFormat
from model_store.tabular.formats.boosters import (
    BoosterRuntime,
    adapter_for,
    booster_threads,
    check_booster,
    check_feature_count,
)
from model_store.tabular.formats.codes import coded_pipeline
from model_store.tabular.formats.sniff import checked_bytes, refuse_foreign

WHAT = "a LightGBM text model"
FILE_NAME = "model.txt"
DEFAULT_NAME = re.compile(r"Column_\d+")
CLASSIFIER_OBJECTIVES = {"binary": "binary", "multiclass": "multiclass", "softmax": "multiclass"}


class LightGBMRuntime(BoosterRuntime):
    library = "lightgbm"
    implementation = "lightgbm pred_contrib"

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(matrix, raw_score=True), dtype=float)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(matrix), dtype=float)

    def raw_contributions(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(matrix, pred_contrib=True))

    def _predict(self, matrix: np.ndarray, **kind: bool) -> Any:
        return self.booster.predict(matrix, num_threads=booster_threads(len(matrix)), **kind)

    def trees(self, missing_columns: Collection[int]) -> Any:
        best = self.booster.best_iteration  # predictions stop there (0 or -1: every tree)
        if best > 0 and best != self.booster.current_iteration():
            return None
        model = self.booster.dump_model()
        if not all(_defaults_hold(tree["tree_structure"], missing_columns) for tree in model["tree_info"]):
            return None
        return self.booster


def _defaults_hold(node: dict[str, Any], missing_columns: Collection[int]) -> bool:
    """Whether every split below ``node`` sends a missing value down its default branch and compares every
    other value, as the tabulated TreeSHAP does: no ``zero_as_missing`` split (zeros take the default branch),
    and no split treating a missing value as 0 (``missing_type: None``) on a column that can be missing."""
    stack = [node]
    while stack:
        node = stack.pop()
        if "split_feature" not in node:
            continue
        kind = node.get("missing_type")
        if kind == "Zero" or (kind == "None" and node["split_feature"] in missing_columns):
            return False
        stack.extend((node["left_child"], node["right_child"]))
    return True


def decode(data: bytes) -> str:
    """The model text, after checking that it starts the way LightGBM's text models do."""
    head = data[:64]
    refuse_foreign(head, WHAT)
    if not head.startswith(b"tree\n") or b"version=v" not in head:
        raise UnsafeArtifact.field(
            "artifact", f"not {WHAT} (one starts with 'tree' and 'version='; save it with model_to_string())"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeArtifact.field("artifact", f"not {WHAT}: not UTF-8 text") from exc


def header(text: str, key: str) -> str | None:
    found = re.search(rf"^{key}=(.*)$", text, flags=re.MULTILINE)
    return found.group(1).strip() if found else None


def categorical_features(text: str) -> set[int]:
    """Features with categorical splits: category lists (not ``[min:max]`` ranges) in ``feature_infos``."""
    infos = (header(text, "feature_infos") or "").split()
    return {i for i, info in enumerate(infos) if info != "none" and not info.startswith("[")}


def objective_kind(text: str) -> str:
    objective = (header(text, "objective") or "regression").split()[0]
    if objective in CLASSIFIER_OBJECTIVES:
        return CLASSIFIER_OBJECTIVES[objective]
    if objective in ("multiclassova", "ova", "cross_entropy", "xentropy", "lambdarank", "rank_xendcg"):
        return f"{objective} (use binary or multiclass)"
    return "regression"


def check_pandas_categories(text: str, manifest: Manifest, categorical: set[int]) -> None:
    """A model trained on pandas categoricals codes each by its position in the pandas categories; those
    must be the manifest's categories, in order."""
    found = re.search(r"^pandas_categorical:(.*)$", text, flags=re.MULTILINE)
    if not found or found.group(1).strip() in ("", "null"):
        return
    try:
        lists = json.loads(found.group(1))
    except ValueError as exc:
        raise UnsafeArtifact.field("artifact", f"{WHAT} with an unreadable pandas_categorical") from exc
    columns = [i for i, spec in enumerate(manifest.features) if spec.type == "categorical"]
    trained = [i for i in columns if i in categorical] if len(lists) != len(columns) else columns
    for index, categories in zip(trained, lists, strict=False):
        if list(categories) != list(manifest.features[index].categories or []):
            raise InvalidManifest.field(
                f"features.{index}.categories",
                "The model was trained on pandas categories " + ", ".join(map(str, categories[:20])),
            )


def load(artifact: bytes | None, manifest: Manifest, limits: ArchiveLimits | None) -> Any:
    import lightgbm

    text = decode(checked_bytes(artifact, limits, "A LightGBM model"))
    try:
        booster = lightgbm.Booster(model_str=text)
    except lightgbm.basic.LightGBMError as exc:
        raise UnsafeArtifact.field("artifact", f"{WHAT} that LightGBM cannot read") from exc
    n_features = int(booster.num_feature())
    check_feature_count(manifest, n_features)
    names = [str(n) for n in booster.feature_name()]
    names_or_none = None if all(DEFAULT_NAME.fullmatch(n) for n in names) else names
    categorical = categorical_features(text)
    check_pandas_categories(text, manifest, categorical)
    runtime = LightGBMRuntime(booster)
    n_outputs = runtime.margin(np.zeros((1, n_features))).reshape(1, -1).shape[1]
    check_booster(manifest, names_or_none, categorical, n_outputs, objective_kind(text))
    return coded_pipeline(manifest, adapter_for(manifest, runtime, n_features))


FORMAT = ArtifactFormat("lightgbm", FILE_NAME, load)

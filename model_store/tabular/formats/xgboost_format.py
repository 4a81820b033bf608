"""XGBoost boosters stored in XGBoost's own UBJSON or JSON model format (``save_raw("ubj")``,
``save_model("model.json")``), read in the manifest's feature order with categories as codes."""

from __future__ import annotations

import json
import threading
from collections.abc import Collection
from typing import Any

import numpy as np

from model_store.archive_limits import ArchiveLimits
from model_store.errors import UnsafeArtifact
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

WHAT = "an XGBoost UBJSON/JSON model"
FILE_NAME = "model.ubj"
CLASSIFIER_OBJECTIVES = {"binary:logistic": "binary", "multi:softprob": "multiclass"}
UBJSON_AFTER_BRACE = b"}#$iUIlLdDSCHTFNZ"


class XGBoostRuntime(BoosterRuntime):
    library = "xgboost"
    implementation = "xgboost pred_contribs"
    input_dtype = np.float32

    def __init__(
        self, booster: Any, missing: float = np.nan, iteration_range: tuple[int, int] = (0, 0)
    ) -> None:
        """``missing`` and ``iteration_range``: a scikit-learn wrapper's own (its ``missing`` value, the trees
        up to its early-stopping ``best_iteration``), so the booster computes what the wrapper predicts."""
        self.booster = booster
        """The loaded booster (a library wrapper's own, then shared with it): never reconfigured here."""
        self._by_threads: dict[int, Any] = {}
        self._making = threading.Lock()
        self.names = booster.feature_names
        self.types = booster.feature_types
        self.missing = missing
        self.iteration_range = iteration_range
        self.gbtree = json.loads(booster.save_config())["learner"]["gradient_booster"]["name"] == "gbtree"
        self._inplace = self.gbtree and "c" not in (self.types or [])
        """Trees on numeric features only: predictions read the array in place (categorical features go via
        a DMatrix that declares them; gblinear cannot predict in place)."""

    def booster_for(self, rows: int) -> Any:
        """The booster on ``booster_threads(rows)`` threads: a copy per thread count, configured once when
        made (concurrent requests share them; XGBoost must not be reconfigured while it predicts)."""
        threads = booster_threads(rows)
        found = self._by_threads.get(threads)
        if found is None:
            with self._making:
                found = self._by_threads.get(threads)
                if found is None:
                    found = self.booster.copy()
                    found.set_param({"nthread": threads})
                    self._by_threads[threads] = found
        return found

    def _matrix(self, matrix: np.ndarray) -> Any:
        import xgboost

        return xgboost.DMatrix(
            np.asarray(matrix, dtype=np.float32),
            missing=self.missing,
            feature_names=self.names,
            feature_types=self.types,
            enable_categorical=True,
            nthread=booster_threads(len(matrix)),
        )

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        if self._inplace:
            return self._inplace_predict(matrix, "margin")
        margin = self.booster_for(len(matrix)).predict(
            self._matrix(matrix), output_margin=True, iteration_range=self.iteration_range
        )
        return np.asarray(margin, dtype=float)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if self._inplace:
            return self._inplace_predict(matrix, "value")
        booster = self.booster_for(len(matrix))
        return np.asarray(
            booster.predict(self._matrix(matrix), iteration_range=self.iteration_range), dtype=float
        )

    def _inplace_predict(self, matrix: np.ndarray, kind: str) -> np.ndarray:
        """The booster's prediction straight from the array (no DMatrix: most of a batch's prediction)."""
        values = self.booster_for(len(matrix)).inplace_predict(
            np.asarray(matrix, dtype=np.float32),
            iteration_range=self.iteration_range,
            predict_type=kind,
            missing=self.missing,
            validate_features=False,
        )
        return np.asarray(values, dtype=float)

    def raw_contributions(self, matrix: np.ndarray) -> np.ndarray:
        contributions = self.booster_for(len(matrix)).predict(
            self._matrix(matrix), pred_contribs=True, iteration_range=self.iteration_range
        )
        return np.asarray(contributions)

    def trees(self, missing_columns: Collection[int]) -> Any:
        first, stop = self.iteration_range
        every_tree = first == 0 and stop in (0, self.booster.num_boosted_rounds())
        plain = self._inplace and np.isnan(self.missing)  # gbtree (not dart), numeric splits, NaN as missing
        return self.booster if every_tree and plain else None


def sniff(data: bytes) -> None:
    """Only XGBoost's JSON and UBJSON documents (both an object: ``{``) are read."""
    head = data[:64].lstrip()
    refuse_foreign(head, WHAT)
    if head.startswith(b"binf") or not head.startswith(b"{"):
        raise UnsafeArtifact.field(
            "artifact",
            f"not {WHAT}: XGBoost's old binary format and other files are refused; save the booster "
            'with save_model("model.ubj") or save_model("model.json")',
        )
    after = head[1:2]
    if after and after not in UBJSON_AFTER_BRACE and not head[1:].lstrip().startswith((b'"', b"}")):
        raise UnsafeArtifact.field("artifact", f"not {WHAT}")


def read_booster(data: bytes) -> Any:
    import xgboost

    booster = xgboost.Booster(params={"nthread": booster_threads()})
    try:
        booster.load_model(bytearray(data))
    except xgboost.core.XGBoostError as exc:
        raise UnsafeArtifact.field("artifact", f"{WHAT} that XGBoost cannot read") from exc
    return booster


def objective_kind(booster: Any) -> tuple[str, str]:
    """``(objective, binary | multiclass | regression | other)`` from the booster's configuration."""
    name = str(json.loads(booster.save_config())["learner"]["objective"]["name"])
    if name in CLASSIFIER_OBJECTIVES:
        return name, CLASSIFIER_OBJECTIVES[name]
    if name.startswith(("binary:", "multi:", "rank:", "survival:")):
        return name, f"{name} (use binary:logistic or multi:softprob)"
    return name, "regression"


def load(artifact: bytes | None, manifest: Manifest, limits: ArchiveLimits | None) -> Any:
    data = checked_bytes(artifact, limits, "An XGBoost model")
    sniff(data)
    booster = read_booster(data)
    n_features = int(booster.num_features())
    check_feature_count(manifest, n_features)
    runtime = XGBoostRuntime(booster)
    types = list(runtime.types or [])
    categorical = {i for i, t in enumerate(types) if t == "c"}
    _, kind = objective_kind(booster)
    n_outputs = runtime.margin(np.zeros((1, n_features))).reshape(1, -1).shape[1]
    names = list(runtime.names) if runtime.names else None
    check_booster(manifest, names, categorical, n_outputs, kind)
    return coded_pipeline(manifest, adapter_for(manifest, runtime, n_features))


FORMAT = ArtifactFormat("xgboost", FILE_NAME, load)

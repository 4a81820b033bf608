"""A model served elsewhere (``format: remote``): no artifact; the manifest's ``predictor`` names the remote
model, and an adapter behind the manifest's own encoding (``codes.coded_pipeline``) sends the rows it is given
back as the values the predictor reads, one request per call for the rows not answered yet in this explanation
(``model_store.predictors``).

The version's ``artifact_sha256`` is the sha256 of the canonical JSON of the ``predictor`` block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_store.archive_limits import ArchiveLimits
from model_store.errors import InvalidInput, InvalidManifest
from model_store.manifest import Manifest, PredictorSpec
from model_store.predictors import PredictorClient, PredictorEndpoint
from model_store.predictors.answers import answered
from model_store.predictors.protocols import Batch
from model_store.stored_form import canonical_json
from model_store.tabular.formats.base import ArtifactFormat, LoadedEstimator
from model_store.tabular.formats.codes import coded_pipeline
from model_store.tabular.formats.probabilities import not_probabilities


class RemoteEstimator(LoadedEstimator):
    """The remote model as a scikit-learn estimator on the coded matrix."""

    def __init__(self, client: PredictorClient, manifest: Manifest) -> None:
        self.client = client
        self.manifest = manifest
        if manifest.is_classification:
            self.classes_ = np.asarray(manifest.classes, dtype=object)
        self.n_features_in_ = len(manifest.features)

    def batch(self, coded: Any) -> Batch:
        """Coded rows back as the values the predictor reads (categories as their values)."""
        matrix = np.asarray(coded, dtype=float)
        columns: list[list[Any]] = []
        datatypes: list[str] = []
        for index, spec in enumerate(self.manifest.features):
            column = matrix[:, index]
            if spec.type == "categorical":
                categories = list(spec.categories or [])
                values = np.asarray(categories, dtype=object)[column.astype(int)].tolist()
                datatype = "INT64" if all(isinstance(c, int) for c in categories) else "BYTES"
            elif spec.type == "boolean":
                values, datatype = (column != 0).tolist(), "BOOL"
            else:
                values, datatype = column.tolist(), "FP64"
            columns.append(values)
            datatypes.append(datatype)
        return Batch(self.manifest.feature_names, columns, datatypes, len(matrix))

    def answer(self, coded: Any) -> np.ndarray:
        """The predictor's answer (rows, width), sent for the rows it has not answered in this explanation
        (``model_store.predictors.answers``)."""
        return answered(
            self.client, np.asarray(coded, dtype=float), lambda m: self.client.infer(self.batch(m))
        )

    def predict_proba(self, coded: Any) -> np.ndarray:
        answer = self.answer(coded)
        why = not_probabilities(answer)
        if why is not None:
            raise self.client.failed(f"answered {why} as class probabilities")
        return answer

    def predict(self, coded: Any) -> np.ndarray:
        answer = self.answer(coded)
        if self.manifest.is_classification:
            return np.asarray(self.classes_[answer.argmax(axis=1)])
        return answer[:, 0]


def predictor_of(manifest: Manifest) -> PredictorSpec:
    if manifest.predictor is None:
        raise InvalidManifest.field("predictor", "A remote model names its predictor.")
    if manifest.predictor.inputs == "tensor":
        for spec in manifest.features:
            if spec.type == "categorical" and not all(isinstance(c, int) for c in spec.categories or [0]):
                raise InvalidManifest.field(
                    "predictor.inputs", f"A tensor holds numbers; {spec.name} has text categories."
                )
    return manifest.predictor


def load(artifact: bytes | None, manifest: Manifest, limits: ArchiveLimits | None) -> Any:
    """``codes -> remote``; the environment's endpoint settings are read now (once per loaded model)."""
    if artifact:
        raise InvalidInput.field("artifact", "A remote model has no artifact; its predictor answers for it.")
    spec = predictor_of(manifest)
    default = "predict_proba" if manifest.is_classification else "predict"
    width = len(manifest.classes or []) if manifest.is_classification else 1
    client = PredictorClient(spec, PredictorEndpoint.from_env(spec.endpoint), spec.output or default, width)
    return coded_pipeline(manifest, RemoteEstimator(client, manifest))


def identity(manifest: Manifest) -> bytes:
    """What the version's ``artifact_sha256`` is computed from: the canonical JSON of the predictor block."""
    return canonical_json(manifest.to_dict().get("predictor") or {})


FORMAT = ArtifactFormat("remote", None, load, identity)

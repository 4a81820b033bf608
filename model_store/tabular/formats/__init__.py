"""How a tabular version's model is stored and loaded: one module per format, one line each in ``FORMATS``.

A format's ``load`` turns the stored artifact into what ``TabularModel`` wraps: a fitted scikit-learn
estimator or Pipeline, or an object that answers like one (``classes_``, ``predict_proba`` or ``predict``,
``decision_function`` where the model has a margin, ``feature_names_in_``).
"""

from __future__ import annotations

from model_store.errors import InvalidManifest
from model_store.manifest import Manifest
from model_store.tabular.formats import (
    lightgbm_format,
    onnx_format,
    remote_format,
    skops_format,
    xgboost_format,
)
from model_store.tabular.formats.base import ArtifactFormat

FORMATS: dict[str, ArtifactFormat] = {
    "skops": skops_format.FORMAT,
    "xgboost": xgboost_format.FORMAT,
    "lightgbm": lightgbm_format.FORMAT,
    "onnx": onnx_format.FORMAT,
    "remote": remote_format.FORMAT,
}


def artifact_format(manifest: Manifest) -> ArtifactFormat:
    """The format a tabular manifest names; ``InvalidManifest`` when this server has none by that name."""
    found = FORMATS.get(manifest.format)
    if found is None:
        raise InvalidManifest.field("format", f"This server does not load {manifest.format} models.")
    return found


__all__ = ["FORMATS", "ArtifactFormat", "artifact_format"]

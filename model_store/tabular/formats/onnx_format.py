"""ONNX classifiers and regressors over tabular inputs, run by onnxruntime on the CPU provider only.

The model ends the manifest's own encoding (``codes.coded_pipeline``), so it always receives the coded float
matrix: features in manifest order, categories as their code positions. The graph reads either that matrix
(one float tensor ``[N, n_features]``) or one input per manifest feature named like it (string tensors for
categories, numbers as float, double or int64, shape ``[N, 1]`` or ``[N]``: what skl2onnx makes of a Pipeline
with a ColumnTransformer); the adapter turns each coded column back into the tensor the graph wants.

Classifiers answer from a probability output (a ``[N, classes]`` tensor, or ZipMap's sequence of maps) with
the class labels the graph declares (the ``classlabels_*`` of its ai.onnx.ml classifier or ZipMap node; the
manifest's when it declares none). No margin is exposed: log-odds are derived from the probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from model_store.archive_limits import ArchiveLimits
from model_store.errors import InvalidInput, InvalidManifest
from model_store.manifest import FeatureSpec, Manifest
from model_store.tabular.formats.base import ArtifactFormat
from model_store.tabular.formats.codes import coded_pipeline
from model_store.tabular.formats.onnx_checks import parse_model
from model_store.tabular.formats.onnx_runtime import Column, Feeds, OnnxClassifier, OnnxRegressor, OnnxSession
from model_store.tabular.formats.onnx_sizes import check_tensor_sizes

NUMBER_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64}
FEATURE_TYPES: dict[str, dict[str, Any]] = {
    "numeric": NUMBER_TYPES,
    "boolean": {**NUMBER_TYPES, "tensor(bool)": np.bool_},
    "categorical": {"tensor(string)": np.object_},
}
LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


# -- inputs --------------------------------------------------------------------------------------------------
def input_feeds(session: OnnxSession, manifest: Manifest) -> Feeds:
    """The layout of the graph's inputs, checked against the manifest; ``InvalidManifest`` naming the
    input that fits neither layout."""
    inputs = session.session.get_inputs()
    names = manifest.feature_names
    if len(inputs) == 1 and inputs[0].name not in names:
        return Feeds(_matrix_input(inputs[0], len(names)))
    by_name = {spec.name: i for i, spec in enumerate(manifest.features)}
    for graph_input in inputs:
        if graph_input.name not in by_name:
            raise _bad_input(
                graph_input.name, "is not a manifest feature (nor one [N, features] float matrix)"
            )
    missing = [name for name in names if name not in {i.name for i in inputs}]
    if missing:
        raise _bad_input(missing[0], "is a manifest feature the graph has no input for")
    return Feeds(None, tuple(_feature_input(i, manifest.features[by_name[i.name]], by_name) for i in inputs))


def _matrix_input(graph_input: Any, n_features: int) -> tuple[str, Any]:
    dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64}.get(graph_input.type)
    shape = graph_input.shape
    if dtype is None or len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != n_features):
        raise _bad_input(
            graph_input.name,
            f"must be a float tensor [N, {n_features}] (the manifest's features in order) "
            f"or the graph must have one input per feature; it is {graph_input.type} {shape}",
        )
    return graph_input.name, dtype


def _feature_input(graph_input: Any, spec: FeatureSpec, by_name: dict[str, int]) -> Column:
    dtype = FEATURE_TYPES[spec.type].get(graph_input.type)
    shape = graph_input.shape
    if dtype is None:
        wanted = " or ".join(FEATURE_TYPES[spec.type])
        raise _bad_input(graph_input.name, f"is {graph_input.type}; a {spec.type} feature needs {wanted}")
    if len(shape) not in (1, 2) or (len(shape) == 2 and isinstance(shape[1], int) and shape[1] != 1):
        raise _bad_input(graph_input.name, f"must have shape [N, 1] or [N]; it is {shape}")
    categories = None
    if spec.type == "categorical":
        categories = np.asarray([str(c) for c in spec.categories or []], dtype=object)
    return Column(graph_input.name, by_name[spec.name], dtype, len(shape), categories)


def _bad_input(name: str, why: str) -> InvalidInput:
    return InvalidManifest.field("features", f"The ONNX graph's input '{name}' {why}.")


# -- outputs -------------------------------------------------------------------------------------------------
def graph_classes(model: onnx.ModelProto) -> list[Any] | None:
    """The class labels an ai.onnx.ml classifier or ZipMap node of the main graph declares, if any."""
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.name in LABEL_ATTRIBUTES:
                values = onnx.helper.get_attribute_value(attribute)
                return [v.decode() if isinstance(v, bytes) else int(v) for v in values]
    return None


def _pick_outputs(session: OnnxSession, classifier: bool) -> tuple[str, str | None]:
    """(the probability or value output, the label output or None)."""
    outputs = session.session.get_outputs()
    if not classifier:
        values = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
        if not values:
            raise InvalidManifest.field("task", "The ONNX graph has no float output for a regression value.")
        return values[0].name, None
    probability = [o for o in outputs if o.type.startswith("seq(map(") or _is_matrix(o)]
    if not probability:
        raise InvalidManifest.field(
            "task", "The ONNX graph has no probability output ([N, classes] tensor or ZipMap)."
        )
    labels = [o.name for o in outputs if len(o.shape) == 1 and o.type in ("tensor(int64)", "tensor(string)")]
    return probability[0].name, labels[0] if labels else None


def _is_matrix(output: Any) -> bool:
    return output.type in ("tensor(float)", "tensor(double)") and len(output.shape) == 2


# -- the format ----------------------------------------------------------------------------------------------
def load(artifact: bytes | None, manifest: Manifest, limits: ArchiveLimits | None) -> Any:
    if artifact is None:
        raise InvalidInput.field("artifact", "An ONNX model needs its artifact (model.onnx).")
    proto = parse_model(artifact, limits)
    if limits is not None:
        check_tensor_sizes(proto, limits.max_onnx_tensor_bytes)
    session = OnnxSession(artifact)
    feeds = input_feeds(session, manifest)
    n_features = len(manifest.features)
    if not manifest.is_classification:
        output, _ = _pick_outputs(session, classifier=False)
        return coded_pipeline(manifest, OnnxRegressor(session, feeds, n_features, output))
    output, label_output = _pick_outputs(session, classifier=True)
    declared = graph_classes(proto)
    labels = declared or list(manifest.classes or [])
    model = OnnxClassifier(
        session, feeds, n_features, labels, output, label_output, limits is not None, declared is not None
    )
    return coded_pipeline(manifest, model)


FORMAT = ArtifactFormat("onnx", "model.onnx", load)

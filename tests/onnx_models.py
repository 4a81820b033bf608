"""Tiny ONNX models for the ONNX format tests, built from scikit-learn with skl2onnx (and XGBoost with
onnxmltools) on the credit fixture data, and an oracle that scores rows with onnxruntime directly.

The oracle builds the graph's inputs from raw rows on its own (no Candor code): one float32 matrix of the
manifest's features in order with categories as their positions in the manifest's ``categories``, or one
``[N, 1]`` tensor per feature (strings for categories).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from cf_oracles import CREDIT_CATEGORICAL, credit_model
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.ensemble import GradientBoostingClassifier

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def onnx_manifest(task: str, name: str) -> dict[str, Any]:
    """The credit manifest for ``task`` as an ONNX model: format onnx, categories declared in code order."""
    manifest = copy.deepcopy(credit_model(task)[0])
    manifest["name"] = name
    manifest["format"] = "onnx"
    for spec in manifest["features"]:
        if spec["name"] in CREDIT_CATEGORICAL:
            spec["categories"] = sorted(CREDIT_CATEGORICAL[spec["name"]])
    return manifest


def categories(manifest: dict[str, Any]) -> dict[str, list[Any]]:
    return {f["name"]: f["categories"] for f in manifest["features"] if f["type"] == "categorical"}


def coded(manifest: dict[str, Any], frame: pd.DataFrame) -> np.ndarray:
    """Raw rows as the manifest's coded matrix (categories as positions), float64."""
    cats = categories(manifest)
    columns = []
    for spec in manifest["features"]:
        column = frame[spec["name"]]
        if spec["name"] in cats:
            columns.append(column.map({c: i for i, c in enumerate(cats[spec["name"]])}).to_numpy(float))
        else:
            columns.append(column.to_numpy(float))
    return np.column_stack(columns)


def per_feature_types(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """skl2onnx input types: strings for categories, int64 for tenure (a whole-number column), floats."""
    types: list[tuple[str, Any]] = []
    for spec in manifest["features"]:
        if spec["type"] == "categorical":
            types.append((spec["name"], StringTensorType([None, 1])))
        elif spec["name"] == "tenure":
            types.append((spec["name"], Int64TensorType([None, 1])))
        else:
            types.append((spec["name"], FloatTensorType([None, 1])))
    return types


@cache
def per_feature_classifier() -> tuple[dict[str, Any], bytes, pd.DataFrame]:
    """The credit Pipeline (one-hot + gradient boosting) as one graph input per feature, no ZipMap."""
    _, pipeline, reference = credit_model("binary")
    manifest = onnx_manifest("binary", "onnx-credit")
    proto = convert_sklearn(
        pipeline,
        initial_types=per_feature_types(manifest),
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )
    return manifest, proto.SerializeToString(), reference


@cache
def matrix_classifier() -> tuple[dict[str, Any], bytes, pd.DataFrame]:
    """Gradient boosting fitted on the coded matrix, one float input [N, 8], with its ZipMap output."""
    _, _, reference = credit_model("binary")
    manifest = onnx_manifest("binary", "onnx-matrix")
    X = coded(manifest, reference)
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)
    model.fit(X, reference["outcome"].to_numpy())
    proto = convert_sklearn(
        model, initial_types=[("X", FloatTensorType([None, X.shape[1]]))], target_opset=TARGET_OPSET
    )
    return manifest, proto.SerializeToString(), reference


@cache
def per_feature_regressor() -> tuple[dict[str, Any], bytes, pd.DataFrame]:
    _, pipeline, reference = credit_model("regression")
    manifest = onnx_manifest("regression", "onnx-regression")
    proto = convert_sklearn(pipeline, initial_types=per_feature_types(manifest), target_opset=TARGET_OPSET)
    return manifest, proto.SerializeToString(), reference


@cache
def xgboost_multiclass() -> tuple[dict[str, Any], bytes, pd.DataFrame]:
    """An XGBoost classifier on the coded matrix converted by onnxmltools; its labels are 0, 1, 2."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloat
    from xgboost import XGBClassifier

    _, _, reference = credit_model("multiclass")
    manifest = onnx_manifest("multiclass", "onnx-xgb")
    manifest["classes"] = ["0", "1", "2"]
    X = coded(manifest, reference)
    y = pd.Series(reference["outcome"]).map({"high": 0, "low": 1, "mid": 2}).to_numpy()
    model = XGBClassifier(n_estimators=20, max_depth=3, random_state=0, n_jobs=1).fit(X, y)
    proto = onnxmltools.convert_xgboost(
        model, initial_types=[("input", MlFloat([None, X.shape[1]]))], target_opset=15
    )
    return manifest, proto.SerializeToString(), reference.assign(outcome=y.astype(str))


class OrtOracle:
    """Scores raw rows with onnxruntime called directly (what a user would do with the same file)."""

    def __init__(self, manifest: dict[str, Any], artifact: bytes) -> None:
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # tree ensembles sum in another order on more threads (float32)
        self.session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.steps: list[Any] = []  # cf_oracles.encoder_categories reads no encoder from it
        names = [o.name for o in self.session.get_outputs()]
        self.output = next((n for n in names if "prob" in n), names[-1] if len(names) > 1 else names[0])

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.manifest["features"]]

    def feeds_from_coded(self, matrix: np.ndarray) -> dict[str, np.ndarray]:
        if len(self.inputs) == 1 and self.inputs[0].name not in self.features:
            return {self.inputs[0].name: matrix.astype(np.float32)}
        cats = categories(self.manifest)
        feeds: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.features):
            column = matrix[:, j]
            if name in cats:
                feeds[name] = np.asarray(cats[name], dtype=object)[np.rint(column).astype(int)].reshape(-1, 1)
            elif name == "tenure":
                feeds[name] = np.rint(column).astype(np.int64).reshape(-1, 1)
            else:
                feeds[name] = column.astype(np.float32).reshape(-1, 1)
        return feeds

    def outputs_coded(self, matrix: np.ndarray) -> np.ndarray:
        (answer,) = self.session.run([self.output], self.feeds_from_coded(matrix))
        if isinstance(answer, list):  # ZipMap
            classes = self.manifest["classes"]
            return np.asarray([[row[c] for c in classes] for row in answer], dtype=float)
        return np.asarray(answer, dtype=float)

    def frame(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        return pd.DataFrame.from_records(list(rows), columns=self.features)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.outputs_coded(coded(self.manifest, frame))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.outputs_coded(coded(self.manifest, frame)).reshape(-1)


def with_node(artifact: bytes, node: onnx.NodeProto, opset: tuple[str, int] | None = None) -> bytes:
    """The model with one more node whose output becomes an extra graph output."""
    proto = onnx.load_model_from_string(artifact)
    proto.graph.node.append(node)
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
    )
    if opset is not None:
        proto.opset_import.append(onnx.helper.make_opsetid(*opset))
    return proto.SerializeToString()


def with_external_initializer(artifact: bytes) -> bytes:
    """The model with an initializer whose data lives in a file outside it."""
    proto = onnx.load_model_from_string(artifact)
    tensor = onnx.TensorProto(name="outside", data_type=onnx.TensorProto.FLOAT, dims=[4])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../../../etc/passwd"), ("offset", "0"), ("length", "16")):
        tensor.external_data.add(key=key, value=value)
    proto.graph.initializer.append(tensor)
    return proto.SerializeToString()


@cache
def softmax_classifier() -> tuple[dict[str, Any], bytes, pd.DataFrame]:
    """A hand-made graph of standard operators only (MatMul, Add, Softmax, ArgMax) that declares no class
    labels: its label output is the class index (0 = approve, 1 = deny), so the manifest names the classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _, _, reference = credit_model("binary")
    manifest = onnx_manifest("binary", "onnx-softmax")
    X = coded(manifest, reference)
    scaler = StandardScaler().fit(X)
    fitted = LogisticRegression(max_iter=500).fit(scaler.transform(X), reference["outcome"])
    coef = fitted.coef_[0] / scaler.scale_
    intercept = fitted.intercept_[0] - float(coef @ scaler.mean_)
    weights = np.column_stack([-coef / 2, coef / 2]).astype(np.float32)  # softmax of +-z/2 is sigmoid(z)
    bias = np.asarray([-intercept / 2, intercept / 2], dtype=np.float32)
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        "softmax",
        [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [None, X.shape[1]])],
        [
            helper.make_tensor_value_info("label", onnx.TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, [None, 2]),
        ],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto)
    return manifest, proto.SerializeToString(), reference

"""What the tensors of an uploaded ONNX graph would cost, worked out by ONNX shape inference before any
onnxruntime session exists (a session folds constant subgraphs while it is created).

Shape inference runs in a child process (``onnx_inference``) on a copy whose declared ``value_info`` and
output shapes are dropped (an upload cannot hide a big tensor behind a small declared shape) and whose
initializers of more than ``SHAPE_DATA_ELEMENTS`` elements are declared inputs (inference reads only short
tensors' values; the copy stays small).

A tensor is refused when its least possible size exceeds ``max_onnx_tensor_bytes``: static dimensions
multiplied, the first open dimension (the batch) counted as ``BATCH_ROWS`` rows, any other open dimension as
1. A tensor computed from constants alone (what a session may fold while loading) must have a fully known
shape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import onnx

from model_store.tabular.formats.onnx_checks import refuse
from model_store.tabular.formats.onnx_inference import (
    SHAPE_DATA_ELEMENTS,
    InferenceRefused,
    graphs,
    infer,
    infos,
)

BATCH_ROWS = 256
"""Rows an open (batch) dimension counts for."""
STRING_BYTES = 32
"""What onnxruntime keeps per string element (a std::string), before its characters."""
Dims = list[int | None]


def check_tensor_sizes(model: onnx.ModelProto, max_bytes: int) -> None:
    """``UnsafeArtifact`` naming the first tensor of ``model`` (any subgraph) that may cost more than
    ``max_bytes``, or computed from constants with a size shape inference cannot tell."""
    known: set[str] = set()
    for inferred in _inferred(model):
        for graph in graphs(inferred.graph):
            for info in infos(graph):
                dims = _dims(info)
                if dims is not None:
                    _check_size(info.name, info.type.tensor_type.elem_type, dims, max_bytes)
                    if None not in dims:
                        known.add(info.name)
    for graph, constants in _graphs_with_constants(model.graph, set()):
        for tensor in graph.initializer:
            _check_size(tensor.name, tensor.data_type, list(tensor.dims), max_bytes)
        for sparse in graph.sparse_initializer:  # onnxruntime makes it dense
            _check_size(sparse.values.name, sparse.values.data_type, list(sparse.dims), max_bytes)
        unknown = sorted(constants - known)
        if unknown:
            raise refuse(_unknown_constant(unknown[0]))


def _inferred(model: onnx.ModelProto) -> tuple[onnx.ModelProto, ...]:
    """The model with every tensor's type and shape inferred afresh; and again with data propagation over
    its short integer tensors (when that does not fail)."""
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    for graph in graphs(bare.graph):
        del graph.value_info[:]
        for output in graph.output:
            if output.type.HasField("tensor_type"):
                output.type.tensor_type.ClearField("shape")
    _strip_big_initializers(bare)
    try:
        return infer(bare)
    except InferenceRefused as exc:
        raise refuse(str(exc)) from exc


def _strip_big_initializers(bare: onnx.ModelProto) -> None:
    """Make each initializer of more than ``SHAPE_DATA_ELEMENTS`` elements a main graph input of its type and
    shape: inference reads only short ones (shapes, axes, scales), and the copies it makes stay small."""
    declared: list[onnx.ValueInfoProto] = []
    for graph in graphs(bare.graph):
        inputs = {graph_input.name for graph_input in graph.input}
        for tensor in list(graph.initializer):
            if math.prod(tensor.dims) > SHAPE_DATA_ELEMENTS:
                graph.initializer.remove(tensor)
                if tensor.name not in inputs:
                    declared.append(
                        onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
                    )
    bare.graph.input.extend(declared)


def _graphs_with_constants(
    graph: onnx.GraphProto, outer: set[str]
) -> Iterator[tuple[onnx.GraphProto, set[str]]]:
    """Each graph (subgraphs too) with the names of the node outputs it computes from constants alone."""
    available = (
        outer | {t.name for t in graph.initializer} | {s.values.name for s in graph.sparse_initializer}
    )
    available -= {i.name for i in graph.input}  # an input overrides its initializer
    constants: set[str] = set()
    for node in graph.node:
        if all(name in available for name in node.input if name):
            outputs = {name for name in node.output if name}
            constants |= outputs
            available |= outputs
    yield graph, constants
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _graphs_with_constants(sub, available - {i.name for i in sub.input})


def _dims(info: onnx.ValueInfoProto) -> Dims | None:
    """The dimensions of a tensor value (None for an open one), or None when its rank is unknown or it is
    no tensor (a sequence or map: its size is not checked)."""
    if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]


def _check_size(name: str, elem_type: int, dims: Dims, max_bytes: int) -> None:
    known = math.prod(max(d, 0) for d in dims if d is not None)
    rows = BATCH_ROWS if None in dims else 1
    size = known * rows * _item_bytes(elem_type)
    if size > max_bytes:
        shape = "x".join("N" if d is None else str(d) for d in dims) or "scalar"
        batch = f" for {BATCH_ROWS} rows" if rows > 1 else ""
        raise refuse(
            f"tensor '{name}' ({shape}) would take {size} bytes{batch}; "
            f"at most {max_bytes} (CANDOR_MAX_ONNX_TENSOR_BYTES)"
        )


def _item_bytes(elem_type: int) -> int:
    if elem_type == onnx.TensorProto.STRING:
        return STRING_BYTES
    try:
        return int(onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize)
    except (KeyError, ValueError, TypeError):
        return 1


def _unknown_constant(name: str) -> str:
    return (
        f"tensor '{name}' is computed from constants when the model loads, and its size cannot be worked "
        "out beforehand"
    )

"""What an uploaded ONNX model must be before onnxruntime sees it, checked cheapest first: its size, that it
is not a pickle, that it parses as a ModelProto (from bytes: external data is never read), and that the graph
uses only the standard ONNX operator domains, no external-data tensor and no more nodes than allowed.

Every refusal is an ``UnsafeArtifact`` (422) naming why; no onnx or protobuf text reaches the client.
"""

from __future__ import annotations

from collections.abc import Iterator

import onnx
from google.protobuf.message import DecodeError

from model_store.archive_limits import ArchiveLimits
from model_store.errors import InvalidInput, UnsafeArtifact
from model_store.tabular.formats.onnx_inference import graphs

STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
"""The operator sets onnxruntime's CPU provider implements without any custom-op library."""
TRAINING_DOMAINS = frozenset({"ai.onnx.training", "ai.onnx.preview.training"})
PICKLE_PROTOCOLS = frozenset(range(2, 6))


def refuse(reason: str) -> InvalidInput:
    """An ``UnsafeArtifact`` about the artifact field."""
    return UnsafeArtifact.field("artifact", reason)


def parse_model(artifact: bytes, limits: ArchiveLimits | None) -> onnx.ModelProto:
    """The checked ModelProto of an upload (``limits``) or of a stored, verified artifact (None: no caps)."""
    if limits is not None and len(artifact) > limits.max_onnx_bytes:
        raise refuse(f"an ONNX model may have at most {limits.max_onnx_bytes} bytes")
    if len(artifact) >= 2 and artifact[0] == 0x80 and artifact[1] in PICKLE_PROTOCOLS:
        raise refuse("this is a pickle, not an ONNX model; pickles are never loaded")
    try:
        model = onnx.load_model_from_string(artifact, format="protobuf")  # never reads external data
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise refuse("the file does not parse as an ONNX model (truncated or another format?)") from exc
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise refuse("the file does not parse as an ONNX model (no graph or no IR version)")
    check_graph(model, limits)
    return model


def check_graph(model: onnx.ModelProto, limits: ArchiveLimits | None) -> None:
    """Operator domains, training parts, external data and the node count of a parsed model."""
    if len(model.training_info) > 0:
        raise refuse("ONNX training information is not accepted")
    for opset in model.opset_import:
        _check_domain(opset.domain, "opset_import")
    if len(model.functions) > 0:
        raise refuse("model-local ONNX functions are not accepted (custom operators)")
    nodes = 0
    for graph in graphs(model.graph):
        for node in graph.node:
            nodes += 1
            _check_domain(node.domain, f"node {node.op_type}")
        for tensor in _tensors(graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
                raise refuse(f"tensor '{tensor.name}' keeps its data in an external file")
    if limits is not None and nodes > limits.max_onnx_nodes:
        raise refuse(f"the graph has {nodes} nodes; at most {limits.max_onnx_nodes}")


def _check_domain(domain: str, where: str) -> None:
    if domain in TRAINING_DOMAINS:
        raise refuse(f"{where} uses the training domain '{domain}'")
    if domain not in STANDARD_DOMAINS:
        raise refuse(f"{where} uses the custom domain '{domain}'; only ai.onnx and ai.onnx.ml are run")


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph holds itself: initializers, sparse initializers and node attributes."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices

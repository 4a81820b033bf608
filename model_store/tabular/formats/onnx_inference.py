"""ONNX shape inference on an untrusted graph, in a child process: ``infer(bare)`` runs this file as a script
(``python -I``, onnx its only import) under an address-space limit and a timeout, since inference itself can
be driven to gigabytes by a small graph (a declared rank of 100,000 passed along 100 nodes took 785 MB).

The child infers twice: without data propagation, then with it (which resolves shapes computed from
``Shape`` of the input) after every 1-D integer tensor not known to have at most ``SHAPE_DATA_ELEMENTS``
elements is cut from the graph (made a main graph input of unknown shape): propagation works over every
element of such a tensor of known length, values known or not, and could otherwise grow exponentially.
"""

from __future__ import annotations

import resource
import struct
import subprocess
import sys
from collections.abc import Iterable, Iterator

import onnx

SHAPE_DATA_ELEMENTS = 64
"""Longest 1-D integer tensor (a shape) data propagation may see."""
INTEGER_TYPES = frozenset(
    getattr(onnx.TensorProto, name)
    for name in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
)
BASE_BYTES = 512 * 1024 * 1024
"""Address space the child may use besides 4 bytes per byte of the model it infers (Python and onnx take
about 160 MB of it)."""
TIMEOUT_SECONDS = 30
EXIT_INCONSISTENT = 3
INFERENCE_ERRORS = (
    onnx.shape_inference.InferenceError,
    onnx.checker.ValidationError,
    RuntimeError,
    ValueError,
)


class InferenceRefused(Exception):
    """Inference found the graph inconsistent, went over its memory or time, or stopped otherwise."""


def infer(bare: onnx.ModelProto) -> tuple[onnx.ModelProto, ...]:
    """``bare`` inferred without, then (when that does not fail) with data propagation, in a child."""
    data = bare.SerializeToString()
    limit = BASE_BYTES + 4 * len(data)
    try:
        done = subprocess.run(
            [sys.executable, "-I", __file__, str(limit)],
            input=data,
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise InferenceRefused(f"ONNX shape inference on this graph took over {TIMEOUT_SECONDS} s") from exc
    if done.returncode == EXIT_INCONSISTENT:
        raise InferenceRefused("the graph's types or shapes are inconsistent (ONNX shape inference fails)")
    if done.returncode != 0:  # out of memory shows as a MemoryError, a C++ abort or glibc's exit 127
        raise InferenceRefused(f"ONNX shape inference could not finish on this graph within {limit} bytes")
    return tuple(onnx.load_model_from_string(part) for part in _unpack(done.stdout))


def graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every subgraph inside its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from graphs(attribute.g)
            for sub in attribute.graphs:
                yield from graphs(sub)


def infos(graph: onnx.GraphProto) -> Iterable[onnx.ValueInfoProto]:
    """The typed values inference fills in: intermediate values and outputs."""
    yield from graph.value_info
    yield from graph.output


def _both(bare: onnx.ModelProto) -> list[bytes]:
    first = onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=False, data_prop=False)
    _cut_long_integers(bare, first)
    try:
        second = onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=False, data_prop=True)
    except INFERENCE_ERRORS:
        return [first.SerializeToString()]
    return [first.SerializeToString(), second.SerializeToString()]


def _cut_long_integers(bare: onnx.ModelProto, first: onnx.ModelProto) -> None:
    """Make each 1-D integer tensor of ``bare`` not known (per ``first``) to be short a main graph input of
    unknown shape, and forget the shape of such inputs (big initializers are inputs already)."""
    inferred = {info.name: info for graph in graphs(first.graph) for info in infos(graph)}
    cut: list[onnx.ValueInfoProto] = []
    for graph in graphs(bare.graph):
        for graph_input in graph.input:
            if _long_integers(graph_input):
                graph_input.type.tensor_type.ClearField("shape")
        for node in graph.node:
            for i, name in enumerate(node.output):
                info = inferred.get(name)
                if info is not None and _long_integers(info):
                    node.output[i] = f"{name}::cut"
                    cut.append(
                        onnx.helper.make_tensor_value_info(name, info.type.tensor_type.elem_type, None)
                    )
    bare.graph.input.extend(cut)


def _long_integers(info: onnx.ValueInfoProto) -> bool:
    tensor_type = info.type.tensor_type
    if tensor_type.elem_type not in INTEGER_TYPES:
        return False
    if not tensor_type.HasField("shape"):
        return True  # the second pass might learn it
    dims = tensor_type.shape.dim
    return len(dims) == 1 and not (dims[0].HasField("dim_value") and dims[0].dim_value <= SHAPE_DATA_ELEMENTS)


def _pack(parts: list[bytes]) -> bytes:
    return b"".join(struct.pack("<Q", len(part)) + part for part in parts)


def _unpack(data: bytes) -> list[bytes]:
    parts, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<Q", data, offset)
        parts.append(data[offset + 8 : offset + 8 + size])
        offset += 8 + size
    return parts


def _main(limit: int) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        parts = _both(onnx.load_model_from_string(sys.stdin.buffer.read()))
    except INFERENCE_ERRORS:
        return EXIT_INCONSISTENT
    sys.stdout.buffer.write(_pack(parts))
    return 0


if __name__ == "__main__":
    sys.exit(_main(int(sys.argv[1])))

"""Small ONNX graphs that would make big tensors (memory bombs), each the hand-made softmax classifier plus
a few nodes whose output is one more graph output; and, run as a script, a registration of some of them in
a fresh process that reports each answer and the process's peak RSS growth.

    python tests/onnx_bombs.py DATA_DIR MAX_TENSOR_BYTES NAME...
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx_models import softmax_classifier

FLOAT = TensorProto.FLOAT


def ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def bomb(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    output_shape: list[int] | None = None,
    value_info: list[onnx.ValueInfoProto] = (),  # type: ignore[assignment]
) -> bytes:
    """The softmax classifier with ``nodes``; the last node's first output becomes a graph output."""
    _, artifact, _ = softmax_classifier()
    proto = onnx.load_model_from_string(artifact)
    proto.graph.node.extend(nodes)
    proto.graph.initializer.extend(initializers)
    proto.graph.value_info.extend(value_info)
    proto.graph.output.append(helper.make_tensor_value_info(nodes[-1].output[0], FLOAT, output_shape))
    return proto.SerializeToString()


def constant_of_shape() -> bytes:
    """A 400 MB float tensor from a 1-element shape (folded while the session is created)."""
    return bomb([helper.make_node("ConstantOfShape", ["big_shape"], ["zeros"])], [ints("big_shape", [10**8])])


def expand_rows() -> bytes:
    """Each input row broadcast to [features, 2.5 million]: 400 MB for the 5 reference rows scored."""
    return bomb(
        [
            helper.make_node("Unsqueeze", ["X", "axis2"], ["column"]),
            helper.make_node("Expand", ["column", "wide"], ["expanded"]),
        ],
        [ints("axis2", [2]), ints("wide", [1, 1, 2_500_000])],
    )


def tile() -> bytes:
    """1,000 floats tiled 100,000 times: 400 MB folded at load."""
    ones = numpy_helper.from_array(np.ones(1000, np.float32), "ones")
    return bomb(
        [helper.make_node("Tile", ["ones", "repeats"], ["tiled"])], [ones, ints("repeats", [100_000])]
    )


def range_() -> bytes:
    scalars = [
        numpy_helper.from_array(np.asarray(v, np.float32), n)
        for n, v in (("start", 0), ("limit", 1e9), ("delta", 1))
    ]
    return bomb([helper.make_node("Range", ["start", "limit", "delta"], ["counted"])], scalars)


def pad() -> bytes:
    return bomb([helper.make_node("Pad", ["X", "pads"], ["padded"])], [ints("pads", [0, 0, 0, 10**7])])


def resize() -> bytes:
    scales = numpy_helper.from_array(np.asarray([1, 1e6], np.float32), "scales")
    return bomb([helper.make_node("Resize", ["X", "", "scales"], ["resized"])], [scales])


def broadcast() -> bytes:
    column = numpy_helper.from_array(np.ones((10_000, 1), np.float32), "column")
    row = numpy_helper.from_array(np.ones((1, 10_000), np.float32), "row")
    return bomb([helper.make_node("Add", ["column", "row"], ["square"])], [column, row])


def sparse_constant() -> bytes:
    """A Constant whose sparse value is one float in a 100,000 x 100,000 matrix (made dense at load)."""
    value = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(1, np.float32), "v"), ints("i", [5]), [100_000, 100_000]
    )
    return bomb([helper.make_node("Constant", [], ["dense"], sparse_value=value)])


def declared_small() -> bytes:
    """The ConstantOfShape bomb behind an Identity, both declaring a 1-element shape."""
    return bomb(
        [
            helper.make_node("ConstantOfShape", ["big_shape"], ["zeros"]),
            helper.make_node("Identity", ["zeros"], ["small"]),
        ],
        [ints("big_shape", [10**8])],
        output_shape=[1],
        value_info=[helper.make_tensor_value_info("zeros", FLOAT, [1])],
    )


def shape_expand() -> bytes:
    """Each input row expanded to ``Concat(Shape(X), [10 million])`` (seen by data propagation only)."""
    return bomb(
        [
            helper.make_node("Shape", ["X"], ["x_shape"]),
            helper.make_node("Concat", ["x_shape", "ten_million"], ["target"], axis=0),
            helper.make_node("Unsqueeze", ["X", "axis2"], ["column"]),
            helper.make_node("Expand", ["column", "target"], ["shaped"]),
        ],
        [ints("ten_million", [10**7]), ints("axis2", [2])],
    )


def rank_chain() -> bytes:
    """An extra input declaring 100,000 dimensions, passed along 100 Identity nodes: ONNX shape inference
    itself took 785 MB and 7 s over it."""
    _, artifact, _ = softmax_classifier()
    proto = onnx.load_model_from_string(artifact)
    proto.graph.input.append(helper.make_tensor_value_info("wide", FLOAT, [1] * 100_000))
    previous = "wide"
    for i in range(100):
        proto.graph.node.append(helper.make_node("Identity", [previous], [f"passed{i}"]))
        previous = f"passed{i}"
    proto.graph.output.append(helper.make_tensor_value_info(previous, FLOAT, None))
    return proto.SerializeToString()


def doubling(times: int = 20) -> bytes:
    """A 64-element integer constant concatenated with itself ``times`` times (20: 64M int64, 512 MB).
    What ONNX data propagation would materialise: 14 times cost it 300 MB, 16 times 1.2 GB."""
    nodes, previous = [], "seed"
    for i in range(times):
        nodes.append(helper.make_node("Concat", [previous, previous], [f"twice{i}"], axis=0))
        previous = f"twice{i}"
    nodes.append(helper.make_node("Cast", [previous], ["doubled"], to=FLOAT))
    return bomb(nodes, [ints("seed", [1] * 64)])


BOMBS: dict[str, tuple[Callable[[], bytes], str]] = {
    "ConstantOfShape": (constant_of_shape, "'zeros' (100000000) would take 400000000 bytes"),
    "Expand": (expand_rows, "'expanded' (Nx8x2500000) would take 20480000000 bytes for 256 rows"),
    "Tile": (tile, "'tiled' (100000000) would take 400000000 bytes"),
    "Range": (range_, "'counted' (1000000000)"),
    "Pad": (pad, "'padded' (Nx10000008)"),
    "Resize": (resize, "'resized' (Nx8000000)"),
    "broadcast": (broadcast, "'square' (10000x10000)"),
    "sparse Constant": (sparse_constant, "'dense' (100000x100000)"),
    "declared small": (declared_small, "'zeros' (100000000)"),
    "Concat doubling": (doubling, "'twice"),
    "Shape Expand": (shape_expand, "'shaped' (Nx8x10000000) would take"),
    "rank chain": (rank_chain, "ONNX shape inference could not finish on this graph within"),
}
"""Each bomb and what its refusal must say."""


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` memory figure in kB (``VmRSS`` now, ``VmHWM`` its peak)."""
    for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _peak_since_now() -> int:
    """Reset the process's peak RSS to its current RSS (``clear_refs`` 5) and return it in kB: the growth
    measured from here is this run's own, whatever the imports' peak was."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")
    return _status_kb("VmRSS")


def main(data: str, max_tensor_bytes: int, names: list[str]) -> dict[str, Any]:
    """Register the plain softmax classifier (warming every import), then each named bomb."""
    from api.http.app import create_app
    from model_store.reference import to_parquet

    app = create_app(
        {
            "data_dir": data,
            "database_url": f"sqlite:///{data}/candor.db",
            "max_onnx_tensor_bytes": max_tensor_bytes,
        }
    )
    writer = app.extensions["candor"].store.keys.create("bombs", ["models:write"])[0]
    client = app.test_client()
    manifest, artifact, reference = softmax_classifier()

    def register(name: str, body: bytes) -> Any:
        return client.post(
            f"/v1/models/{name}/versions",
            headers={"Authorization": f"Bearer {writer}"},
            content_type="multipart/form-data",
            data={
                "manifest": json.dumps({**manifest, "name": name}),
                "artifact": (io.BytesIO(body), "model.onnx"),
                "reference": (io.BytesIO(to_parquet(reference)), "reference.parquet"),
            },
        )

    results: dict[str, Any] = {"plain": register("plain", artifact).status_code}
    if "bait" in names:  # data propagation bait: harmless to onnxruntime, registered
        names = [name for name in names if name != "bait"] + ["bait"]
    baseline = _peak_since_now()
    for name in names:
        started = time.perf_counter()
        response = register(name.replace(" ", "-"), doubling(14) if name == "bait" else BOMBS[name][0]())
        results[name] = {
            "status": response.status_code,
            "problem": response.get_json(),
            "seconds": time.perf_counter() - started,
        }
    results["growth_mb"] = (_status_kb("VmHWM") - baseline) / 1024
    app.extensions["candor"].store.close()
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])))

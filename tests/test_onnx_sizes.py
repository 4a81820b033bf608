"""ONNX memory bombs: small graphs whose tensors would be huge are refused (422 naming ``artifact``, the
tensor and its bytes) before any onnxruntime session exists, quickly and without the memory; the setting
CANDOR_MAX_ONNX_TENSOR_BYTES moves the line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cf_oracles import Served, serve
from onnx import helper
from onnx_bombs import BOMBS, bomb, ints
from onnx_models import softmax_classifier
from test_onnx_format import PROBLEM, register

from api.http.app import create_app

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("onnx-sizes") / "data"
    app = create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}"})
    try:
        yield serve(app)
    finally:
        app.extensions["candor"].store.close()


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_naming_the_tensor_and_its_bytes(served: Served, name: str) -> None:
    build, phrase = BOMBS[name]
    manifest, _, reference = softmax_classifier()
    response = register(served, {**manifest, "name": "onnx-bomb"}, build(), reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM, response.get_data(as_text=True)
    (message,) = response.get_json()["errors"]["artifact"]
    assert phrase in message and "bytes" in message, message
    assert served.client.get("/v1/models/onnx-bomb", headers=served.auth).status_code == 404


def test_a_graph_inference_finds_inconsistent_is_refused(served: Served) -> None:
    """A float input added to an int64 initializer: ONNX shape inference's type check fails (in the child)."""
    manifest, _, reference = softmax_classifier()
    clash = bomb([helper.make_node("Add", ["X", "ints"], ["clash"])], [ints("ints", [1] * 8)])
    response = register(served, {**manifest, "name": "onnx-clash"}, clash, reference)
    assert response.status_code == 422 and response.mimetype == PROBLEM, response.get_data(as_text=True)
    assert "inconsistent" in response.get_json()["errors"]["artifact"][0]


def registered_in_a_process(tmp_path: Path, max_tensor_bytes: int, *names: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    data = tmp_path / f"data-{max_tensor_bytes}"
    data.mkdir()
    done = subprocess.run(
        [sys.executable, str(TESTS / "onnx_bombs.py"), str(data), str(max_tensor_bytes), *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    results: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["plain"] == 201, results
    return results


def test_bombs_are_refused_quickly_and_with_little_memory(tmp_path: Path) -> None:
    """ConstantOfShape (folded at load), Expand (on the reference rows, its shape constant or computed from
    ``Shape`` of the input), Tile (folded) and rank-chain (shape inference itself) bombs registered in a
    fresh process: each refused within 5 s (inference runs in a child process), the process's peak RSS
    growing by less than 300 MB, also over a graph that would make ONNX's data propagation materialise
    300 MB (registered: harmless to onnxruntime). The Tile upload with the guard lifted costs that process
    more than 300 MB (the measure sees it: Tile writes every byte, where a zero-filled ConstantOfShape may
    leave its pages untouched, depending on the allocator)."""
    bombs = ("ConstantOfShape", "Expand", "Shape Expand", "Tile", "rank chain")
    results = registered_in_a_process(tmp_path, 64 * 1024 * 1024, *bombs, "bait")
    assert results["bait"]["status"] == 201, results["bait"]
    for name in bombs:
        assert results[name]["status"] == 422, results[name]
        assert BOMBS[name][1] in results[name]["problem"]["errors"]["artifact"][0]
        assert results[name]["seconds"] < 5, results[name]
    assert results["growth_mb"] < 300, results
    unguarded = registered_in_a_process(tmp_path, 2**62, "Tile")
    assert unguarded["growth_mb"] > 300, unguarded


def test_the_setting_moves_the_line(tmp_path: Path) -> None:
    """The plain softmax classifier (a [N, 2] probability tensor: 2,048 bytes for 256 rows) is refused
    under a 1,000-byte limit, naming the tensor, and registered under the default."""
    manifest, artifact, reference = softmax_classifier()
    for limit, status in ((1000, 422), (64 * 1024 * 1024, 201)):
        data = tmp_path / str(limit)
        app = create_app(
            {"data_dir": data, "database_url": f"sqlite:///{data}.db", "max_onnx_tensor_bytes": limit}
        )
        try:
            response = register(serve(app), manifest, artifact, reference)
            assert response.status_code == status, response.get_json()
            if status == 422:
                assert (
                    "at most 1000 (CANDOR_MAX_ONNX_TENSOR_BYTES)"
                    in response.get_json()["errors"]["artifact"][0]
                )
        finally:
            app.extensions["candor"].store.close()

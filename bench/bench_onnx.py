"""The ``loan`` pipeline exported to ONNX against the same pipeline stored with skops, through the real API
(gunicorn, 1 worker, 1 thread), and against onnxruntime called in-process, in one run.

Run from the repository root: ``.venv/bin/python bench/bench_onnx.py [--quick]`` (or ``make bench``).

- The ONNX model: ``loan``'s fitted pipeline (one-hot + 200-tree gradient boosting) converted by skl2onnx with
  one input per feature (strings for categories, float for numbers), registered over HTTP as ``loan-onnx``
  (``format: onnx``) with the loan manifest and reference data; ``loan`` is the skops demo version.
- (a) predict, 1,000 rows in one call: the API on both versions, and onnxruntime in-process (the same
  session options: CPU provider, 1 thread; feeds built from the rows' frame);
- (b) permutation SHAP, one row per call (``algorithm: permutation``, ``max_evals`` 512, 100 background rows):
  the API on both versions;
- (c) counterfactuals, one declined application per call (4, method random, seed 0): the API on both.
The sides alternate call by call. The ONNX version's probabilities are checked against onnxruntime in-process
(exit status 1 above 1e-6). Prints a markdown table; writes ``bench/results/onnx.json``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import requests
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import BenchServer, timed  # noqa: E402

from api.demo import LOAN_TARGET, german_credit, loan_model  # noqa: E402
from model_store.reference import to_parquet  # noqa: E402

MAX_ABS_DIFF = 1e-6


def onnx_loan() -> tuple[dict[str, Any], bytes, Any]:
    """(manifest, model.onnx bytes, fitted pipeline) of ``loan`` exported to ONNX."""
    manifest, pipeline, _ = loan_model()
    manifest = copy.deepcopy(manifest)
    manifest.update(name="loan-onnx", format="onnx")
    categories: dict[str, list[Any]] = {}
    for _name, transformer, columns in pipeline[0].transformers_:
        for column, cats in zip(columns, getattr(transformer, "categories_", []), strict=False):
            categories[column] = [c.item() if hasattr(c, "item") else c for c in cats]
    types: list[tuple[str, Any]] = []
    for spec in manifest["features"]:
        if spec["type"] == "categorical":
            spec["categories"] = categories[spec["name"]]
            types.append((spec["name"], StringTensorType([None, 1])))
        else:
            types.append((spec["name"], FloatTensorType([None, 1])))
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}}
    proto = convert_sklearn(
        pipeline, initial_types=types, options=options, target_opset={"": 17, "ai.onnx.ml": 3}
    )
    return manifest, proto.SerializeToString(), pipeline


class InProcess:
    """onnxruntime on the same file, fed from the rows' frame the way a user would."""

    def __init__(self, artifact: bytes, manifest: dict[str, Any]) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(artifact, options, providers=["CPUExecutionProvider"])
        self.specs = manifest["features"]

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        feeds = {}
        for spec in self.specs:
            column = frame[spec["name"]].to_numpy()
            if spec["type"] == "categorical":
                feeds[spec["name"]] = column.astype(str).astype(object).reshape(-1, 1)
            else:
                feeds[spec["name"]] = column.astype(np.float32).reshape(-1, 1)
        return np.asarray(self.session.run(["probabilities"], feeds)[0], dtype=float)


def register(server: BenchServer, manifest: dict[str, Any], artifact: bytes, reference: pd.DataFrame) -> None:
    response = requests.post(
        f"{server.base}/v1/models/{manifest['name']}/versions",
        headers={"Authorization": f"Bearer {server.token}"},
        files={
            "manifest": (None, json.dumps(manifest)),
            "artifact": ("model.onnx", io.BytesIO(artifact)),
            "reference": ("reference.parquet", io.BytesIO(to_parquet(reference))),
        },
        timeout=120,
    )
    if response.status_code != 201:
        raise RuntimeError(f"registration failed: {response.status_code} {response.text[:2000]}")


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 3 if args.quick else 15
    manifest, artifact, pipeline = onnx_loan()
    data = german_credit()
    rows_frame = data.drop(columns=[LOAN_TARGET])
    rows = json.loads(rows_frame.to_json(orient="records"))
    direct = InProcess(artifact, manifest)
    proba = pipeline.predict_proba(rows_frame)
    declined = [rows[i] for i in np.flatnonzero(proba[:, 1] < 0.5)[: max(calls, 1)]]
    times: dict[str, list[float]] = {}

    def clock(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    with tempfile.TemporaryDirectory() as tmp:
        server = BenchServer(Path(tmp), scopes=("explain", "models:write"), demos=("loan",))
        try:
            register(server, manifest, artifact, data)
            for model in ("loan", "loan-onnx"):  # load both before timing
                server.post(f"/v1/models/{model}/versions/1/predict", {"instances": rows[:1]})
            worst = 0.0
            for i in range(calls):
                for model in ("loan", "loan-onnx"):
                    path = f"/v1/models/{model}/versions/1"
                    seconds, answer = timed(server.post, f"{path}/predict", {"instances": rows})
                    clock(f"predict 1,000 rows: API {model}", seconds)
                    if model == "loan-onnx":
                        got = np.asarray(
                            [[p["probabilities"][c] for c in ("bad", "good")] for p in answer["predictions"]]
                        )
                        seconds, expected = timed(direct, rows_frame)
                        clock("predict 1,000 rows: onnxruntime in-process", seconds)
                        worst = max(worst, float(np.abs(got - expected).max()))
                    body = {"instances": [rows[i]], "algorithm": "permutation"}
                    clock(
                        f"permutation SHAP, 1 row: API {model}",
                        timed(server.post, f"{path}/explain/shap", body)[0],
                    )
                    body = {"instances": [declined[i % len(declined)]], "seed": 0}
                    clock(
                        f"counterfactuals, 1 row: API {model}",
                        timed(server.post, f"{path}/explain/counterfactuals", body)[0],
                    )
        finally:
            server.stop()
    table = {name: median_ms(samples) for name, samples in times.items()}
    print("| measurement | median ms |\n|---|---|")
    for name, value in table.items():
        print(f"| {name} | {value} |")
    ratios = {
        kind: round(table[f"{kind}: API loan-onnx"] / table[f"{kind}: API loan"], 2)
        for kind in ("predict 1,000 rows", "permutation SHAP, 1 row", "counterfactuals, 1 row")
    }
    ratios["predict 1,000 rows, API onnx / onnxruntime in-process"] = round(
        table["predict 1,000 rows: API loan-onnx"] / table["predict 1,000 rows: onnxruntime in-process"], 2
    )
    print("\nratios (ONNX / skops):", json.dumps(ratios), f"\nmax |API - onnxruntime| = {worst:.2e}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "onnx.json").write_text(
        json.dumps({"median_ms": table, "ratios": ratios, "max_abs_diff": worst}, indent=2)
    )
    return 0 if worst <= MAX_ABS_DIFF else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""A model served elsewhere (``format: remote``) against the same model held in-process: permutation SHAP and
counterfactuals on the ``loan`` demo Pipeline.

Run from the repository root: ``.venv/bin/python bench/bench_remote.py [--quick]`` (needs .venv-mlserver:
``bash tests/mlserver_env.sh``).

- In-process: the ``loan`` Pipeline registered with skops. Remote: the same Pipeline served by MLServer 1.7.1
  (scikit-learn runtime, joblib in MLServer's own directory, one process, started on loopback here) and
  registered with ``format: remote`` (Open Inference Protocol V2, one input per feature) and the completed
  manifest of the in-process version.
- Requests, through the API in this process (Flask's test client, SQLite): SHAP ``algorithm: permutation``,
  ``max_evals`` 512, seed 0, on the first 10 applications in one request; counterfactuals (4 toward ``good``,
  method ``random``, seed 0) on the first 5 declined applications in one request. Every call is recorded, as
  over HTTP. One untimed warm-up per side, then the sides alternate call by call; medians.
- Predictor requests per explanation: the ``requests`` the record of each remote explanation states (the
  explanation's computation; the record's answer for the explained rows is one more). Waiting for the
  predictor: the time the client spent in those requests and the record's (sending, the predictor's work,
  receiving), measured around the requests (``model_store.predictors.counting_calls``).
Prints a markdown table; writes ``bench/results/remote.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from harness import timed  # noqa: E402
from predictor_servers import running_mlserver  # noqa: E402

from api.demo import LOAN_TARGET, loan_model  # noqa: E402
from api.http.app import create_app  # noqa: E402
from model_store.manifest import parse_manifest  # noqa: E402
from model_store.predictors import counting_calls  # noqa: E402
from model_store.reference import to_parquet  # noqa: E402
from model_store.safe_load import dump_skops  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 timed calls per side instead of 7")
    repeats = 3 if parser.parse_args().quick else 7
    manifest, pipeline, data = loan_model()
    features = data.drop(columns=[LOAN_TARGET])
    with tempfile.TemporaryDirectory(prefix="candor-bench-remote-") as temporary:
        root = Path(temporary)
        with running_mlserver(root / "mlserver", {"loan-sklearn": pipeline}) as base:
            os.environ["CANDOR_PREDICTOR_LOAN_URL"] = base
            app = create_app({"data_dir": root / "data", "database_url": f"sqlite:///{root / 'candor.db'}"})
            try:
                figures = run(app, manifest, pipeline, features, repeats)
            finally:
                app.extensions["candor"].store.close()
    print(table(figures))
    out = ROOT / "bench" / "results" / "remote.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    return 0


def run(app: Any, manifest: dict[str, Any], pipeline: Any, features: Any, repeats: int) -> dict[str, Any]:
    store = app.extensions["candor"].store
    local = store.registry.register_tabular(
        parse_manifest({**manifest, "name": "loan-local"}), dump_skops(pipeline), to_parquet(features)
    )
    predictor = {"protocol": "v2", "model": "loan-sklearn", "endpoint": "LOAN"}
    remote_manifest = {
        **local.manifest_data,
        "name": "loan-remote",
        "format": "remote",
        "predictor": predictor,
    }
    store.registry.register_tabular(parse_manifest(remote_manifest), None, to_parquet(features))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {store.keys.create('bench', ['explain'])[0]}"}
    rows = json.loads(features.head(10).to_json(orient="records"))
    declined = features[pipeline.predict_proba(features)[:, 1] < 0.5].head(5)
    bodies = {
        "shap": {"instances": rows, "algorithm": "permutation", "max_evals": 512, "seed": 0},
        "counterfactuals": {
            "instances": json.loads(declined.to_json(orient="records")),
            "total_cfs": 4,
            "seed": 0,
        },
    }
    figures: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine(), "repeats": repeats}
    for method, body in bodies.items():
        times: dict[str, list[float]] = {"loan-local": [], "loan-remote": []}
        requests_per_explanation: list[int] = []
        waiting: list[float] = []
        for attempt in range(repeats + 1):
            for name in times:
                url = f"/v1/models/{name}/versions/1/explain/{method}"
                with counting_calls() as tally:
                    seconds, response = timed(partial(client.post, url, json=body, headers=headers))
                if response.status_code != 200:
                    raise SystemExit(
                        f"{name} {method}: {response.status_code} {response.get_data(as_text=True)}"
                    )
                if attempt == 0:
                    continue  # the warm-up
                times[name].append(seconds)
                if name == "loan-remote":
                    waiting.append(tally.seconds)
                    record = store.audit.get(orjson.loads(response.data)["id"])
                    requests_per_explanation.append(record["remote"]["requests"])
        held, served = statistics.median(times["loan-local"]), statistics.median(times["loan-remote"])
        figures[method] = {
            "rows": len(body["instances"]),
            "in_process_s": round(held, 4),
            "remote_s": round(served, 4),
            "ratio": round(served / held, 3),
            "predictor_requests_per_explanation": statistics.median(requests_per_explanation),
            "waiting_for_predictor_s": round(statistics.median(waiting), 4),
        }
    return figures


def table(figures: dict[str, Any]) -> str:
    lines = [
        "| method | rows | in-process (skops) s | remote (MLServer V2) s | ratio (<= 1.5) "
        "| predictor requests | waiting for the predictor s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in ("shap", "counterfactuals"):
        f = figures[method]
        lines.append(
            f"| {method} | {f['rows']} | {f['in_process_s']} | {f['remote_s']} | {f['ratio']} | "
            f"{f['predictor_requests_per_explanation']} | {f['waiting_for_predictor_s']} |"
        )
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())

"""A tiny stdlib HTTP predictor run in a subprocess by tests/predictor_servers.py.

``python predictor_stub.py PORT MODE [MODEL]``: MODE ``v1`` serves KServe V1
(``POST /v1/models/NAME:predict``, ``{"instances": [{feature: value}, ...]}`` ->
``{"predictions": [[p, ...], ...]}``) from the scikit-learn model in the joblib file MODEL (run with
.venv-mlserver's Python, which has scikit-learn and joblib); the fault modes answer every POST: ``slow``
after 3 s, ``error`` with 503, ``shape`` with one probability too many, ``scores`` with raw scores.
``GET /count`` answers how many POSTs it received.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COUNT = {"posts": 0}
LOCK = threading.Lock()


def v1_answer(model: Any, body: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd

    instances = body["instances"]
    frame = pd.DataFrame(instances)
    if not isinstance(instances[0], dict):
        frame.columns = list(model.feature_names_in_)
    return {"predictions": model.predict_proba(frame).tolist()}


def handler(mode: str, model: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"posts": COUNT["posts"]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with LOCK:
                COUNT["posts"] += 1
            if mode == "v1":
                self._send(200, v1_answer(model, body))
            elif mode == "slow":
                time.sleep(3.0)
                self._send(200, {"predictions": []})
            elif mode == "error":
                self._send(503, {"error": "overloaded"})
            elif mode == "scores":  # raw scores where probabilities belong (a model without its softmax)
                rows = len(body.get("instances") or body["inputs"][0]["data"])
                self._send(200, {"predictions": [[-1.5, 2.5]] * rows})
            else:  # shape
                rows = len(body.get("instances") or body["inputs"][0]["data"])
                self._send(200, {"predictions": [[0.2, 0.3, 0.5]] * rows})

    return Handler


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    model = None
    if mode == "v1":
        import joblib

        model = joblib.load(sys.argv[3])
    server = ThreadingHTTPServer(("127.0.0.1", port), handler(mode, model))
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

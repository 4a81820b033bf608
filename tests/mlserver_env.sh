#!/usr/bin/env bash
# Creates .venv-mlserver: MLServer with its scikit-learn runtime, the real Open Inference Protocol V2 server
# tests/test_remote_model.py and bench/bench_remote.py start on loopback. MLServer pins (fastapi, protobuf,
# pydantic, ...) clash with Candor's, so it has its own environment; scikit-learn is Candor's version so the
# joblib file a test writes for MLServer loads there. Re-running is a no-op once the stamp exists.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${MLSERVER_VENV:-.venv-mlserver}"
PYTHON="${PYTHON:-python3.11}"
STAMP="$VENV/.installed"
if [ -f "$STAMP" ] && [ "$STAMP" -nt tests/mlserver-constraints.txt ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q \
  -c tests/mlserver-constraints.txt mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn==1.9.1
touch "$STAMP"

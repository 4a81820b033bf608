"""torch is only for text models: a worker serving tabular requests never imports it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    from api.http.app import create_app
    from api import demo
    from api.http.context import candor
    from api.service.explain_request import ExplainRequest

    app = create_app({"data_dir": tempfile.mkdtemp()})
    with app.app_context():
        service = candor().service
        demo.install_demos(service.store.registry, names=("loan", "clinical"))
        rows = json.load(open("tests/data/loan_declined.json"))["instances"]
        service.predict("loan", "latest", rows)
        for method in ("shap", "counterfactuals", "reasons"):
            service.explain(ExplainRequest(method, "loan", "latest", rows, {}))
    print("torch" in sys.modules)
    """
)


def test_tabular_requests_never_import_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"

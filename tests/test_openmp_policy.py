"""The entry points make OpenMP's idle threads yield (``api/ops``): ``OMP_WAIT_POLICY`` is set before any
OpenMP runtime is loaded (probed when it is set; libgomp reads it once, when loaded, and XGBoost and
scikit-learn bring their own copy), and a setting in the environment is kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """import json, os, sys
seen = []
def gomp():
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "gomp" in line})
def hook(event, args):
    if event == "os.putenv" and args[0] == b"OMP_WAIT_POLICY" and not seen:
        seen.append(gomp())
sys.addaudithook(hook)
"""
REPORT = """import xgboost
print(json.dumps({"when_set": seen[0] if seen else None, "after": gomp(),
                  "policy": os.environ.get("OMP_WAIT_POLICY")}))
"""
ENTRIES = {
    "the candor command": "import api.ops.cli\n",
    "gunicorn's configuration": "import runpy\nrunpy.run_path('api/ops/gunicorn_conf.py')\n",
}


def _probe(entry: str, tmp_path: Path, **extra: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update({"CANDOR_DATA_DIR": str(tmp_path), **extra})
    done = subprocess.run(
        [sys.executable, "-c", PROBE + entry + REPORT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_entry_points_set_the_policy_before_openmp_is_loaded(entry: str, tmp_path: Path) -> None:
    found = _probe(entry, tmp_path)
    assert found["when_set"] == [], "an OpenMP runtime was loaded before api.ops set the policy"
    assert found["after"], "xgboost loads an OpenMP runtime: the probe looks at the right thing"
    assert found["policy"] == "PASSIVE"


def test_an_explicit_policy_is_kept(tmp_path: Path) -> None:
    assert _probe(ENTRIES["the candor command"], tmp_path, OMP_WAIT_POLICY="ACTIVE")["policy"] == "ACTIVE"

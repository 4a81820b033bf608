"""The entry points make OpenMP's idle threads yield (``api/ops``) before any library loads OpenMP: libgomp
reads the policy once, when it is loaded, and reports it (``omp_display_env``: a spin count of 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPORT = "import ctypes, xgboost\nctypes.CDLL('libgomp.so.1').omp_display_env(1)\n"
ENTRIES = {
    "the candor command": "import api.ops.cli\n",
    "gunicorn's configuration": "import runpy\nrunpy.run_path('api/ops/gunicorn_conf.py')\n",
}


def _spin_count(code: str, tmp_path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update({"CANDOR_DATA_DIR": str(tmp_path), **extra})
    done = subprocess.run(
        [sys.executable, "-c", code + REPORT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = [line.split("=")[1].strip() for line in done.stderr.splitlines() if "GOMP_SPINCOUNT" in line]
    assert len(found) == 1, done.stderr
    return found[0]


@pytest.mark.parametrize("entry", ENTRIES.values(), ids=ENTRIES.keys())
def test_entry_points_make_idle_openmp_threads_yield(entry: str, tmp_path: Path) -> None:
    assert _spin_count("", tmp_path) != "'0'"  # libgomp's default: idle threads spin first
    assert _spin_count(entry, tmp_path) == "'0'"


def test_an_explicit_policy_is_kept(tmp_path: Path) -> None:
    assert _spin_count(ENTRIES["the candor command"], tmp_path, OMP_WAIT_POLICY="ACTIVE") != "'0'"

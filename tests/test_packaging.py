"""What a fresh install puts in the venv: the CPU build of XGBoost, never the full ``xgboost`` wheel that
dice-ml asks for (it pulls ~470 MB of NCCL, a CUDA library a CPU server never uses); dice-ml itself installed
without its declared dependencies, every other one of which is present."""

from __future__ import annotations

from importlib import metadata

from packaging.requirements import Requirement

CPU_ONLY = "xgboost-cpu"


def installed() -> set[str]:
    return {(dist.metadata["Name"] or "").lower().replace("_", "-") for dist in metadata.distributions()}


def test_no_cuda_library_and_only_the_cpu_build_of_xgboost() -> None:
    names = installed()
    assert CPU_ONLY in names
    assert "xgboost" not in names, "the full xgboost wheel (and its CUDA libraries) came back"
    assert not [name for name in names if name.startswith("nvidia-")], "a CUDA library is installed"


def test_dice_ml_has_every_requirement_but_the_full_xgboost() -> None:
    names = installed()
    required = [Requirement(text) for text in metadata.requires("dice-ml") or []]
    required = [r for r in required if r.marker is None or r.marker.evaluate({"extra": ""})]  # no extras
    missing = [r.name for r in required if r.name.lower() != "xgboost" and r.name.lower() not in names]
    assert missing == []
    import dice_ml
    import xgboost

    assert metadata.version(CPU_ONLY) == xgboost.__version__
    assert dice_ml.Dice is not None

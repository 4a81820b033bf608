"""Whether a model's answer can be class probabilities (ONNX graphs and remote predictors answer whatever
their output holds: raw scores of a graph without its softmax would otherwise pass for probabilities)."""

from __future__ import annotations

import numpy as np

TOLERANCE = 1e-3
"""How far a row's sum may be from 1 (float32 graphs, rounded JSON)."""


def not_probabilities(matrix: np.ndarray) -> str | None:
    """Why ``matrix`` (rows x classes) is not class probabilities, or None when it is."""
    if matrix.size == 0:
        return None
    if not np.isfinite(matrix).all():
        return "values that are not finite numbers"
    if (matrix < -TOLERANCE).any() or (matrix > 1 + TOLERANCE).any():
        return f"values outside [0, 1] (from {matrix.min():.4g} to {matrix.max():.4g})"
    sums = matrix.sum(axis=1)
    worst = int(np.abs(sums - 1.0).argmax())
    if abs(sums[worst] - 1.0) > TOLERANCE:
        return f"rows that do not sum to 1 (row {worst}: {sums[worst]:.4g})"
    return None

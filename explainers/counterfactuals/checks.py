"""Constraint checks and repairs on candidate matrices, independent of how the candidates were found."""

from __future__ import annotations

import math

import numpy as np

from explainers.counterfactuals.space import GRID_TOLERANCE, SearchSpace


def satisfied(space: SearchSpace, row: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per candidate: True when every constraint of ``space`` holds for a change from ``row``."""
    ok = np.ones(len(candidates), dtype=bool)
    low, high = space.row_limits(row)
    for i, bound in enumerate(space.bounds):
        column = candidates[:, i]
        changed = column != row[i]
        if not bound.varies:
            ok &= ~changed
            continue
        if bound.kind == "numeric":
            inside = (column >= low[i]) & (column <= high[i])
            if bound.step is not None:
                inside &= on_grid(column, bound.step)
            ok &= ~changed | inside
        else:
            ok &= ~changed | np.isin(column, bound.allowed)
    return ok


def on_grid(values: np.ndarray, step: float) -> np.ndarray:
    ratio = values / step
    return np.abs(ratio - np.round(ratio)) <= GRID_TOLERANCE * np.maximum(1.0, np.abs(ratio))


def repair(space: SearchSpace, row: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Fixed features restored; numbers snapped onto their step grid and clamped inside their limits.

    What cannot be repaired (a category outside the allowed set) is left for ``satisfied`` to drop.
    """
    fixed = candidates.copy()
    low, high = space.row_limits(row)
    for i, bound in enumerate(space.bounds):
        if not bound.varies:
            fixed[:, i] = row[i]
        elif bound.kind == "numeric":
            moved = fixed[:, i] != row[i]
            fixed[moved, i] = snap(fixed[moved, i], low[i], high[i], bound.step)
    return fixed


def snap(values: np.ndarray, low: float, high: float, step: float | None) -> np.ndarray:
    """Nearest allowed value: on the grid ``k * step`` when there is a step, within [low, high]."""
    if step is None:
        return np.clip(values, low, high)
    first = math.ceil(low / step - GRID_TOLERANCE) if math.isfinite(low) else -math.inf
    last = math.floor(high / step + GRID_TOLERANCE) if math.isfinite(high) else math.inf
    if first > last:  # no grid point inside the limits: leave the value for ``satisfied`` to refuse
        return values
    k = np.clip(np.round(values / step), first, last)
    return k * step

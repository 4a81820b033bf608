"""The search space of a counterfactual request: which features may move, and where to.

Rows are handled as float matrices in the model's feature order: numbers as they are, categories as their
index in the manifest's category list, booleans as 0/1. The manifest sets the outer bounds (mutable,
protected, min/max, categories, monotone direction, step); a request may narrow them, never widen them, and
contradictions are refused naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from model_store.errors import InvalidInput
from model_store.manifest import FeatureSpec
from model_store.tabular import TabularModel

GRID_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class FeatureBound:
    """Where one feature may go (for every row of a request)."""

    name: str
    kind: str  # numeric | categorical | boolean
    varies: bool
    low: float = -math.inf
    high: float = math.inf
    step: float | None = None
    monotone: str = "none"
    allowed: tuple[int, ...] = ()
    """Allowed category indices (categorical) or values (boolean 0/1)."""

    def describe(self, categories: Sequence[Any] | None) -> dict[str, Any]:
        if self.kind == "numeric":
            return {"min": self.low, "max": self.high, "step": self.step, "monotone": self.monotone}
        if self.kind == "boolean":
            return {"values": [bool(v) for v in self.allowed]}
        return {"categories": [categories[i] for i in self.allowed] if categories else []}


def effective_step(spec: FeatureSpec, reference_column: np.ndarray) -> float | None:
    """The manifest's step, else 1 for a feature whose reference values are all whole numbers."""
    if spec.step is not None:
        return float(spec.step)
    values = reference_column[np.isfinite(reference_column)]
    if len(values) and np.all(values == np.round(values)):
        return 1.0
    return None


class SearchSpace:
    """Bounds of every feature under a request's ``features_to_vary`` and ``permitted_range``."""

    def __init__(
        self,
        model: TabularModel,
        features_to_vary: Sequence[str] | None,
        permitted_range: dict[str, Any] | None,
    ) -> None:
        self.model = model
        self.order = model.feature_order
        self.specs = [model.manifest.feature(name) for name in self.order]
        varying = self._varying(features_to_vary)
        permitted = permitted_range or {}
        self._check_permitted_keys(permitted, varying)
        self.bounds = [
            self._bound(spec, spec.name in varying, permitted.get(spec.name)) for spec in self.specs
        ]
        self.varying = [i for i, b in enumerate(self.bounds) if b.varies]

    # -- request checks ------------------------------------------------------------------------------------
    def _varying(self, features_to_vary: Sequence[str] | None) -> set[str]:
        movable = {s.name for s in self.specs if s.mutable and not s.protected}
        if features_to_vary is None:
            return movable
        errors: dict[str, list[str]] = {}
        for index, name in enumerate(features_to_vary):
            field = f"features_to_vary.{index}"
            if name not in self.order:
                errors[field] = [f"Unknown feature {name!r}."]
            elif self.model.manifest.feature(name).protected:
                errors[field] = [f"{name} is a protected feature and never varies."]
            elif not self.model.manifest.feature(name).mutable:
                errors[field] = [f"{name} is immutable in the manifest."]
        if errors:
            raise InvalidInput("features_to_vary contradicts the model's manifest.", errors)
        return set(features_to_vary)

    def _check_permitted_keys(self, permitted: dict[str, Any], varying: set[str]) -> None:
        for name in permitted:
            field = f"permitted_range.{name}"
            if name not in self.order:
                raise InvalidInput.field(field, "Unknown feature.")
            if name not in varying:
                raise InvalidInput.field(field, "This feature does not vary in this request.")

    # -- bounds ---------------------------------------------------------------------------------------------
    def _bound(self, spec: FeatureSpec, varies: bool, permitted: Any) -> FeatureBound:
        field = f"permitted_range.{spec.name}"
        if spec.type == "numeric":
            low = spec.min if spec.min is not None else -math.inf
            high = spec.max if spec.max is not None else math.inf
            if permitted is not None:
                low, high = _numeric_range(permitted, low, high, field)
            column = self.model.reference[spec.name].to_numpy(dtype=float)
            return FeatureBound(
                spec.name, "numeric", varies, low, high, effective_step(spec, column), spec.monotone
            )
        if spec.type == "boolean":
            allowed: tuple[int, ...] = (0, 1)
            if permitted is not None:
                if (
                    not isinstance(permitted, list)
                    or not all(isinstance(v, bool) for v in permitted)
                    or not permitted
                ):
                    raise InvalidInput.field(field, "Expected a non-empty list of true/false values.")
                allowed = tuple(sorted({int(v) for v in permitted}))
            return FeatureBound(spec.name, "boolean", varies, allowed=allowed)
        categories = list(spec.categories or [])
        allowed_categories: tuple[int, ...] = tuple(range(len(categories)))
        if permitted is not None:
            if not isinstance(permitted, list) or not permitted:
                raise InvalidInput.field(field, "Expected a non-empty list of categories.")
            unknown = [c for c in permitted if isinstance(c, bool) or c not in categories]
            if unknown:
                raise InvalidInput.field(field, f"Categories the model never saw: {unknown}.")
            allowed_categories = tuple(sorted({categories.index(c) for c in permitted}))
        return FeatureBound(spec.name, "categorical", varies, allowed=allowed_categories)

    def row_limits(self, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature (low, high) for one row, monotone directions applied."""
        low = np.array([b.low if b.kind == "numeric" else -math.inf for b in self.bounds])
        high = np.array([b.high if b.kind == "numeric" else math.inf for b in self.bounds])
        for i, bound in enumerate(self.bounds):
            if bound.monotone == "increasing":
                low[i] = max(low[i], row[i])
            elif bound.monotone == "decreasing":
                high[i] = min(high[i], row[i])
        return low, high

    def describe(self) -> dict[str, Any]:
        """The constraints that bound the search, as reported to the client."""
        return {
            "features_to_vary": [self.order[i] for i in self.varying],
            "bounds": {
                b.name: b.describe(spec.categories)
                for b, spec in zip(self.bounds, self.specs, strict=True)
                if b.varies
            },
            "fixed": [b.name for b in self.bounds if not b.varies],
        }


def _numeric_range(permitted: Any, low: float, high: float, field: str) -> tuple[float, float]:
    if (
        not isinstance(permitted, list)
        or len(permitted) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in permitted)
        or not all(math.isfinite(v) for v in permitted)
    ):
        raise InvalidInput.field(field, "Expected [min, max] with two finite numbers.")
    lo, hi = float(permitted[0]), float(permitted[1])
    if lo > hi:
        raise InvalidInput.field(field, "min is greater than max.")
    if hi < low or lo > high:
        raise InvalidInput.field(field, f"Outside the model's range [{low}, {high}].")
    return max(lo, low), min(hi, high)

"""Check raw instances against the manifest's feature schema before any model work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from model_store.errors import InvalidInput
from model_store.manifest import FeatureSpec, Manifest

Columns = dict[str, list[Any]]
"""Validated rows' values per feature, in row order (read once, by whoever reads whole columns)."""
MAX_REPORTED_ERRORS = 50
MAX_MAGNITUDE = float(np.finfo(np.float32).max)
"""Numbers beyond float32's range cannot reach tree models (their thresholds are float32)."""


class InstanceValidator:
    """Validates ``{feature: value}`` rows; numbers become floats; errors keyed ``instances.i.feature``."""

    def __init__(self, manifest: Manifest, field: str = "instances") -> None:
        self.features = {f.name: f for f in manifest.features}
        self.order = manifest.feature_names
        self.field = field
        self._categories = {
            f.name: frozenset(f.categories) for f in manifest.features if f.categories is not None
        }

    def rows_from_lists(self, instances: Sequence[Any]) -> list[Any]:
        """KServe-style positional rows (manifest order) as mappings; other shapes pass through."""
        out: list[Any] = []
        for row in instances:
            if isinstance(row, list):
                out.append(dict(zip(self.order, row, strict=False)) if len(row) == len(self.order) else row)
            else:
                out.append(row)
        return out

    def validate(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        """Rows checked column by column in bulk; any failure re-checks row by row to name each field."""
        return self.validate_columns(instances)[0]

    def validate_columns(self, instances: Sequence[Any]) -> tuple[list[dict[str, Any]], Columns | None]:
        """``validate``, and the rows' values per feature when the bulk check read them (else None)."""
        columns = self._bulk_valid(instances)
        if columns is not None:
            return list(instances), columns
        return self._validate_rows(instances), None

    def _bulk_valid(self, instances: Sequence[Any]) -> Columns | None:
        """The values per feature when every row is valid as it is, else None."""
        keys = self.features.keys()
        if not all(type(row) is dict and row.keys() == keys for row in instances):
            return None
        columns: Columns = {}
        for name, spec in self.features.items():
            columns[name] = column = [row[name] for row in instances]
            kinds = set(map(type, column))
            if spec.type == "numeric":
                if (
                    not kinds <= {int, float}
                    or not (np.abs(np.asarray(column, dtype=float)) <= MAX_MAGNITUDE).all()
                ):
                    return None
            elif spec.type == "boolean":
                if kinds != {bool}:
                    return None
            else:
                allowed = self._categories.get(name)
                if not kinds <= {str, int} or (allowed is not None and not allowed.issuperset(column)):
                    return None
        return columns

    def _validate_rows(self, instances: Sequence[Any]) -> list[dict[str, Any]]:
        errors: dict[str, list[str]] = {}
        records: list[dict[str, Any]] = []
        for index, row in enumerate(instances):
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            prefix = f"{self.field}.{index}"
            if not isinstance(row, dict):
                errors[prefix] = [f"Expected an object with the {len(self.order)} features of the model."]
                continue
            record: dict[str, Any] = {}
            for name in row.keys() - self.features.keys():
                errors[f"{prefix}.{name}"] = ["Unknown feature."]
            for name, spec in self.features.items():
                if name not in row:
                    errors[f"{prefix}.{name}"] = ["Missing feature."]
                    continue
                value, message = self._check(spec, row[name])
                if message:
                    errors[f"{prefix}.{name}"] = [message]
                record[name] = value
            records.append(record)
        if errors:
            raise InvalidInput("Some instances do not match the model's feature schema.", errors)
        return records

    def _check(self, spec: FeatureSpec, value: Any) -> tuple[Any, str | None]:
        if spec.type == "numeric":
            if spec.missing and (value is None or (isinstance(value, float) and math.isnan(value))):
                return math.nan, None  # null in a request, NaN in reference rows
            if isinstance(value, bool) or not isinstance(value, int | float):
                return value, "Expected a number."
            if not math.isfinite(value):
                return value, "NaN and infinity are not allowed."
            if abs(value) > MAX_MAGNITUDE:
                return value, f"Out of range: the magnitude must be at most {MAX_MAGNITUDE:.3e}."
            return float(value), None
        if spec.type == "boolean":
            if not isinstance(value, bool):
                return value, "Expected true or false."
            return value, None
        allowed = self._categories.get(spec.name)
        if isinstance(value, bool) or not isinstance(value, str | int):
            return value, "Expected a category (a string)."
        if allowed is not None and value not in allowed:
            return value, "Unknown category; allowed: " + ", ".join(map(str, sorted(allowed, key=str)[:20]))
        return value, None

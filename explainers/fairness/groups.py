"""The groups of a protected attribute: its categories, or the bins of a numeric one; each row's group, and
the value that stands for each group when a row is moved into it (the flip test). A numeric attribute whose
manifest feature may be missing has a last group, ``missing``, for its missing values: no row is moved into
it, and its rows are moved to each bin's stand-in."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np

from model_store.errors import InvalidInput

MISSING = "missing"
"""The group of a numeric attribute's missing values."""


@dataclasses.dataclass(frozen=True)
class Attribute:
    """A protected feature grouped: ``labels[codes[i]]`` is row i's group, ``values[g]`` the feature value a
    row gets when moved into group g; ``missing`` the index of the missing values' group (no row is moved
    into it), if any."""

    name: str
    labels: list[str]
    values: list[Any]
    codes: np.ndarray
    bins: list[float] | None = None
    missing: int | None = None


def protected_names(model: Any) -> list[str]:
    return [spec.name for spec in model.manifest.features if spec.protected]


def chosen(model: Any, names: list[str] | None) -> list[str]:
    """The attributes asked for (default: every protected feature), each known and protected (422 naming
    ``attributes.<i>`` otherwise; ``attributes`` when the manifest declares none)."""
    protected = protected_names(model)
    if not protected:
        raise InvalidInput.field("attributes", "This model's manifest declares no protected features.")
    if not names:
        return protected
    for index, name in enumerate(names):
        if name not in model.feature_order:
            raise InvalidInput.field(f"attributes.{index}", "Not a feature of this model.")
        if name not in protected:
            raise InvalidInput.field(f"attributes.{index}", "Not declared protected in the manifest.")
    return list(names)


def bins_of(model: Any, names: list[str], asked: Mapping[str, list[float]]) -> dict[str, list[float]]:
    """The cut points of each numeric attribute: the request's, else the manifest's (422 naming
    ``bins.<name>`` when neither gives them, or for a feature that takes none)."""
    specs = {spec.name: spec for spec in model.manifest.features}
    for name in asked:
        if name not in names or specs[name].type != "numeric":
            raise InvalidInput.field(f"bins.{name}", "Bins apply to the numeric attributes of the report.")
    out = {}
    for name in names:
        if specs[name].type != "numeric":
            continue
        edges = asked.get(name) or specs[name].bins
        if not edges:
            raise InvalidInput.field(
                f"bins.{name}",
                "A numeric protected feature needs bins: sorted cut points, here or in the "
                "manifest's feature (bins).",
            )
        out[name] = [float(edge) for edge in edges]
    return out


def _shown(edge: float) -> str:
    short = f"{edge:g}"
    return short if float(short) == edge else repr(float(edge))


def bin_labels(edges: list[float]) -> list[str]:
    """``< a``, ``a to < b``, ..., ``>= z`` for cut points a..z, each shown short (``25``) when that reads
    back as the same number, else in full (``1.0000001``), so distinct edges give distinct labels."""
    shown = [_shown(edge) for edge in edges]
    middle = [f"{low} to < {high}" for low, high in itertools.pairwise(shown)]
    return [f"< {shown[0]}", *middle, f">= {shown[-1]}"]


def _bin_values(edges: list[float], reference: np.ndarray) -> list[float]:
    """The value standing for each bin: the median of the reference values in it (missing ones left out),
    else a value inside it."""
    reference = reference[~np.isnan(reference)]
    codes = np.searchsorted(edges, reference, side="right")
    values = []
    for group in range(len(edges) + 1):
        inside = reference[codes == group]
        if len(inside):
            values.append(float(np.median(inside)))
        elif group == 0:
            values.append(edges[0] - 1.0)
        elif group == len(edges):
            values.append(edges[-1])
        else:
            values.append((edges[group - 1] + edges[group]) / 2)
    return values


def _categories(model: Any, name: str, records: list[dict[str, Any]]) -> list[Any]:
    spec = next(s for s in model.manifest.features if s.name == name)
    if spec.type == "boolean":
        return [False, True]
    if spec.categories:
        return list(spec.categories)
    seen = set(model.reference[name].dropna().tolist()) | {row[name] for row in records}
    return sorted(seen, key=lambda v: (type(v).__name__, v))


def _binned(model: Any, name: str, column: list[Any], edges: list[float]) -> Attribute:
    """A numeric attribute by its bins, and a last group ``missing`` when the feature may be missing."""
    numbers = np.asarray(column, dtype=float)
    codes = np.searchsorted(edges, numbers, side="right")
    labels = bin_labels(edges)
    values: list[Any] = _bin_values(edges, model.reference[name].to_numpy(dtype=float))
    spec = next(s for s in model.manifest.features if s.name == name)
    if not spec.missing:
        return Attribute(name, labels, values, codes, edges)
    codes[np.isnan(numbers)] = len(labels)
    return Attribute(name, [*labels, MISSING], [*values, None], codes, edges, missing=len(labels))


def grouped(model: Any, name: str, records: list[dict[str, Any]], edges: list[float] | None) -> Attribute:
    """Attribute ``name`` over ``records``: binned by ``edges`` when numeric, else by category."""
    column = [row[name] for row in records]
    if edges is not None:
        return _binned(model, name, column, edges)
    values = _categories(model, name, records)
    index = {value: position for position, value in enumerate(values)}
    codes = np.asarray([index[value] for value in column], dtype=np.int64)
    return Attribute(name, [str(v) for v in values], values, codes)

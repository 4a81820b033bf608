"""A request's rows, validated (and for tabular models encoded) once for every part that reads them: the
method's adapter, the adapters it calls in turn (reasons calls SHAP and counterfactuals), the OOD flags."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass
class TabularRows:
    """Rows of a tabular model as its validator returns them; their encoding is computed on first use."""

    model: Any
    records: list[dict[str, Any]]
    _encoded: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def encoded(self) -> np.ndarray:
        """The matrix the final estimator reads, one row per record."""
        if self._encoded is None:
            self._encoded = self.model.encode(self.records)
        return self._encoded

    def subset(self, indices: Sequence[int]) -> TabularRows:
        """The rows at ``indices`` (their encoding too, when it is known)."""
        encoded = self._encoded[list(indices)] if self._encoded is not None else None
        return TabularRows(self.model, [self.records[i] for i in indices], encoded)

    def __len__(self) -> int:
        return len(self.records)


@dataclasses.dataclass(frozen=True)
class TextRows:
    """Texts of a text model, tokenised (``model_store.text.model.Encoded``)."""

    items: list[Any]

    def __len__(self) -> int:
        return len(self.items)


Rows = TabularRows | TextRows


def tabular(rows: Rows) -> TabularRows:
    """``rows`` of a tabular model (an adapter of tabular models given texts is a programming error)."""
    if not isinstance(rows, TabularRows):
        raise TypeError(f"Tabular rows expected, got {type(rows).__name__}.")
    return rows


def texts(rows: Rows) -> TextRows:
    """``rows`` of a text model."""
    if not isinstance(rows, TextRows):
        raise TypeError(f"Texts expected, got {type(rows).__name__}.")
    return rows


def tabular_rows(model: Any, instances: Sequence[Any]) -> TabularRows:
    """``instances`` validated by a tabular model (a 422 naming ``instances.<i>.<feature>`` otherwise)."""
    return TabularRows(model, model.validate(instances))


def rows_of(model: Any, instances: Sequence[Any], options: dict[str, Any]) -> Rows:
    """``instances`` validated for ``model``: texts tokenised (cut to the model's length with the option
    ``truncate``, else refused when too long), tabular rows checked against the manifest."""
    if getattr(model, "flavour", None) == "text":
        return TextRows(model.validate(instances, truncate=bool(options.get("truncate"))))
    return tabular_rows(model, instances)

"""A request's rows, validated (and for tabular models encoded) once for every part that reads them: the
method's adapter, the adapters it calls in turn (reasons calls SHAP and counterfactuals), the OOD flags.
Validation waits for the first reader, so an adapter refuses bad options before bad rows, as it always has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class TabularRows:
    """Rows of a tabular model, validated on first use (so an adapter checks its options first, as it reads
    them) and encoded on first use; each once, whoever asks."""

    def __init__(
        self,
        model: Any,
        instances: Sequence[Any],
        records: list[dict[str, Any]] | None = None,
        encoded: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.instances = instances
        self._records = records
        self._encoded = encoded
        self._columns: dict[str, list[Any]] | None = None

    @property
    def records(self) -> list[dict[str, Any]]:
        """The rows as the manifest's validator returns them (a 422 naming ``instances.<i>.<feature>``)."""
        if self._records is None:
            self._records, self._columns = self.model.validate_columns(self.instances)
        return self._records

    @property
    def columns(self) -> dict[str, list[Any]]:
        """The records' values per feature (read once, by validation when it could)."""
        records = self.records
        if self._columns is None:
            self._columns = {name: [r[name] for r in records] for name in self.model.feature_order}
        return self._columns

    @property
    def encoded(self) -> np.ndarray:
        """The matrix the final estimator reads, one row per record."""
        if self._encoded is None:
            self._encoded = self.model.encode(self.records, self.columns)
        return self._encoded

    def subset(self, indices: Sequence[int]) -> TabularRows:
        """The rows at ``indices`` (their validation and encoding too, when known)."""
        chosen = list(indices)
        records = [self.records[i] for i in chosen]
        encoded = self._encoded[chosen] if self._encoded is not None else None
        return TabularRows(self.model, [self.instances[i] for i in chosen], records, encoded)

    def __len__(self) -> int:
        return len(self.instances)


class TextRows:
    """Texts of a text model, tokenised on first use (``model_store.text.model.Encoded``; too long a text is
    refused unless ``truncate``)."""

    def __init__(self, model: Any, instances: Sequence[Any], truncate: bool) -> None:
        self.model = model
        self.instances = instances
        self.truncate = truncate
        self._items: list[Any] | None = None

    @property
    def items(self) -> list[Any]:
        if self._items is None:
            self._items = self.model.validate(self.instances, truncate=self.truncate)
        return self._items

    def __len__(self) -> int:
        return len(self.instances)


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
    """``instances`` of a tabular model, validated when first read."""
    return TabularRows(model, instances)


def rows_of(model: Any, instances: Sequence[Any], options: dict[str, Any]) -> Rows:
    """``instances`` for ``model``, validated when first read: texts tokenised (cut to the model's length with
    the option ``truncate``, else refused when too long), tabular rows checked against the manifest."""
    if getattr(model, "flavour", None) == "text":
        return TextRows(model, instances, bool(options.get("truncate")))
    return tabular_rows(model, instances)

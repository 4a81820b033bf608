"""Raw features as a float matrix (categories as their index) for model-agnostic explainers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from model_store.tabular import TabularModel


class RawCodec:
    """Encodes rows feature by feature so masking a column masks exactly one raw feature."""

    def __init__(self, model: TabularModel) -> None:
        self.model = model
        self.order = model.feature_order
        self.specs = [model.manifest.feature(name) for name in self.order]
        self.categories = {
            spec.name: np.asarray(spec.categories, dtype=object)
            for spec in self.specs
            if spec.type == "categorical"
        }
        self.lookup = {name: {c: i for i, c in enumerate(cats)} for name, cats in self.categories.items()}

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for spec in self.specs:
            column = frame[spec.name]
            if spec.type == "categorical":
                lookup = self.lookup[spec.name]
                columns.append(np.fromiter((lookup[v] for v in column), dtype=float, count=len(column)))
            else:
                columns.append(column.to_numpy(dtype=float))
        return np.column_stack(columns) if columns else np.empty((len(frame), 0))

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for j, spec in enumerate(self.specs):
            column = matrix[:, j]
            if spec.type == "categorical":
                data[spec.name] = self.categories[spec.name][np.rint(column).astype(int)]
            elif spec.type == "boolean":
                data[spec.name] = column > 0.5
            else:
                data[spec.name] = column
        return pd.DataFrame(data, columns=self.order)

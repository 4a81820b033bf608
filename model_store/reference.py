"""Reference (background) data: read an upload as Parquet or CSV, store it as Parquet."""

from __future__ import annotations

import io

import pandas as pd

from model_store.errors import InvalidInput

PARQUET_MAGIC = b"PAR1"


def read_reference(data: bytes) -> pd.DataFrame:
    """A DataFrame from Parquet bytes (by magic number) or CSV text."""
    try:
        if data[:4] == PARQUET_MAGIC:
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas and pyarrow raise many kinds on malformed files
        raise InvalidInput.field("reference", "Not a readable Parquet or CSV file.") from exc


def to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()

"""A job's rows: read from an uploaded CSV or Parquet file (or a stored dataset) in a stream, checked against
the model's columns, converted to the model's types, and written as a local Parquet file with one row group
per chunk (the job's stored input chunks, ``model_store.job_inputs``), so memory stays bounded."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from model_store.errors import InvalidInput
from model_store.manifest import Manifest

PARQUET_MAGIC = b"PAR1"
CSV_BLOCK_BYTES = 1 << 20
TEXT_COLUMN = "text"
PANDAS_INDEX = re.compile(r"__index_level_\d+__")
"""The index pandas stores as a column (``DataFrame.to_parquet`` of a filtered frame): not a feature."""


class TooManyRows(InvalidInput):
    status = 413
    title = "Too many rows"
    type_slug = "too-many-rows"


def target_schema(manifest: Manifest, label_columns: Sequence[str] = ()) -> pa.Schema:
    """The columns a job's rows must have, in the model's order, with the types its validator accepts, then
    the columns of class labels the job's method reads (as text)."""
    if manifest.is_text:
        return pa.schema([(TEXT_COLUMN, pa.string())])
    columns = []
    for spec in manifest.features:
        if spec.type == "numeric":
            kind = pa.float64()
        elif spec.type == "boolean":
            kind = pa.bool_()
        elif spec.categories and all(isinstance(c, int) and not isinstance(c, bool) for c in spec.categories):
            kind = pa.int64()
        else:
            kind = pa.string()
        columns.append((spec.name, kind))
    return pa.schema(columns + [(name, pa.string()) for name in label_columns])


def check_labels(path: Path, columns: Mapping[str, str], classes: Sequence[str]) -> None:
    """Every value of each label column (``{column: the option naming it}``) is one of ``classes``: a 422
    naming the option otherwise. Read column by column from the stored rows."""
    if not columns:
        return
    table = pq.read_table(path, columns=list(columns))
    for column, option in columns.items():
        values = table.column(column)
        if values.null_count:
            raise InvalidInput.field(option, f"The column {column!r} has {values.null_count} empty values.")
        unknown = sorted(set(pc.unique(values).to_pylist()) - set(classes))
        if unknown:
            shown = ", ".join(repr(v[:40]) for v in unknown[:5])
            listed = ", ".join(classes)
            raise InvalidInput.field(
                option, f"Column {column!r} holds values that are not classes ({shown}); classes: {listed}."
            )


def _check_columns(names: list[str], schema: pa.Schema, field: str, extra_allowed: bool) -> None:
    expected = set(schema.names)
    unknown = [n for n in names if n not in expected]
    missing = [n for n in schema.names if n not in names]
    if len(set(names)) != len(names):
        raise InvalidInput.field(field, "Column names must be unique.")
    if unknown and not extra_allowed:
        raise InvalidInput.field(field, "Unknown columns: " + ", ".join(unknown[:20]))
    if missing:
        raise InvalidInput.field(field, "Missing columns: " + ", ".join(missing[:20]))


def _csv_batches(stream: IO[bytes], schema: pa.Schema, field: str) -> Iterator[pa.RecordBatch]:
    try:
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict(zip(schema.names, schema.types, strict=True))
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        raise InvalidInput.field(field, f"Not a readable CSV file ({_reason(exc)}).") from exc
    _check_columns(reader.schema.names, schema, field, extra_allowed=False)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
            raise InvalidInput.field(field, f"Not a readable CSV file ({_reason(exc)}).") from exc
        yield batch


def _parquet_batches(
    stream: IO[bytes], schema: pa.Schema, field: str, extra_allowed: bool, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    try:
        parquet = pq.ParquetFile(stream)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput.field(field, "Not a readable Parquet file.") from exc
    names = [n for n in parquet.schema_arrow.names if not PANDAS_INDEX.fullmatch(n)]
    _check_columns(names, schema, field, extra_allowed)
    try:
        yield from parquet.iter_batches(batch_size=batch_rows, columns=schema.names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidInput.field(field, "Not a readable Parquet file.") from exc


def _as_text(table: pa.Table, label_columns: Sequence[str]) -> pa.Table:
    """Boolean and numeric label columns as text the way Python writes their values (``True``, ``1.0``), as
    the manifest's classes and a version's reference outcomes are; Arrow's own cast would write ``true`` and
    ``1``. Other columns are cast as the features are."""
    for name in label_columns:
        column = table.column(name)
        kind = column.type
        if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
            single = pa.types.is_float32(
                kind
            )  # written as its shortest float32 text (0.1, not 0.10000000149)
            texts = pa.array(
                [None if v is None else str(np.float32(v)) if single else str(v) for v in column.to_pylist()],
                pa.string(),
            )
            table = table.set_column(table.schema.get_field_index(name), name, texts)
    return table


def _conformed(
    batch: pa.RecordBatch, schema: pa.Schema, field: str, label_columns: Sequence[str]
) -> pa.Table:
    table = _as_text(pa.Table.from_batches([batch]).select(schema.names), label_columns)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidInput.field(field, f"A column does not have the model's type ({_reason(exc)}).") from exc


def _reason(exc: Exception) -> str:
    """Arrow's first line names the column or row at fault; no path or library internals."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def write_input(
    stream: IO[bytes],
    schema: pa.Schema,
    dest: Path,
    chunk_rows: int,
    max_rows: int,
    field: str = "file",
    extra_columns_allowed: bool = False,
    label_columns: Sequence[str] = (),
) -> int:
    """Normalise a CSV or Parquet stream into ``dest`` (row groups of ``chunk_rows``); the number of rows.
    Unreadable files, wrong columns or types are a 422 naming ``field``; more than ``max_rows`` rows a 413."""
    head = stream.read(4)
    stream.seek(0)
    if head == PARQUET_MAGIC:
        batches = _parquet_batches(stream, schema, field, extra_columns_allowed, chunk_rows)
    else:
        batches = _csv_batches(stream, schema, field)
    total = 0
    pending: list[pa.Table] = []
    pending_rows = 0
    with pq.ParquetWriter(dest, schema) as writer:
        for batch in batches:
            total += batch.num_rows
            if total > max_rows:
                raise TooManyRows(
                    f"{field}: at most {max_rows} rows per job.", {field: [f"At most {max_rows} rows."]}
                )
            pending.append(_conformed(batch, schema, field, label_columns))
            pending_rows += batch.num_rows
            if pending_rows >= chunk_rows:
                whole = pending_rows - pending_rows % chunk_rows
                table = pa.concat_tables(pending)
                writer.write_table(table.slice(0, whole), row_group_size=chunk_rows)
                pending, pending_rows = [table.slice(whole)], pending_rows - whole
        if pending_rows:
            writer.write_table(pa.concat_tables(pending), row_group_size=chunk_rows)
    if total == 0:
        raise InvalidInput.field(field, "The file holds no rows.")
    return total

"""Global summaries of a job, accumulated chunk by chunk.

Each chunk yields an accumulator of sums and counts (JSON, bounded by the number of features, labels or
groups, and for a fairness job's bootstrap by groups times resamples, never by rows); the runner merges it
into the job row in the chunk's own transaction, so a resumed job neither loses nor double-counts a chunk.
``finalize`` turns the sums into the figures a reader wants:

- every kind: rows ok / with errors, predicted label counts;
- then the method's own figures, from its spec's ``accumulate`` and ``finalize`` (``api.methods``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from api.methods.registry import spec
from api.methods.spec import Acc, add


def merge(left: Acc, right: Acc) -> Acc:
    """The sum of two accumulators (dicts of dicts of numbers or equal-length number lists)."""
    out = dict(left)
    for key, value in right.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, list):
            out[key] = [a + b for a, b in zip(out[key], value, strict=True)]
        else:
            out[key] = out[key] + value
    return out


def accumulate(kind: str, lines: Iterable[dict[str, Any]], feature_order: list[str] | None = None) -> Acc:
    """The accumulator of one chunk's result lines."""
    acc: Acc = {}
    method = spec(kind)
    ok: list[tuple[int, dict[str, Any]]] = []
    for line in lines:
        if line["status"] != "ok":
            add(acc, ("rows", "error"), 1)
            continue
        add(acc, ("rows", "ok"), 1)
        result = line["result"]
        label = (result.get("prediction") or {}).get("label")
        if label is not None:
            add(acc, ("labels", str(label)), 1)
        if method.accumulate_rows is None:
            method.accumulate(acc, result, feature_order)
        else:
            ok.append((int(line["row"]), result))
    if method.accumulate_rows is not None and ok:
        method.accumulate_rows(acc, ok)
    return acc


def finalize(kind: str, acc: Acc) -> dict[str, Any]:
    """The job's summary from its accumulator (partial while the job runs)."""
    rows = acc.get("rows", {})
    out: dict[str, Any] = {
        "rows_ok": int(rows.get("ok", 0)),
        "rows_error": int(rows.get("error", 0)),
        "label_counts": {k: int(v) for k, v in sorted(acc.get("labels", {}).items())},
    }
    out.update(spec(kind).finalize(acc))
    return out

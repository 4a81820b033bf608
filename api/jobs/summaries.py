"""Global summaries of a job, accumulated chunk by chunk.

Each chunk yields a small accumulator of sums and counts (JSON, bounded by the number of features or
labels, never by rows); the runner merges it into the job row in the chunk's own transaction, so a resumed
job neither loses nor double-counts a chunk. ``finalize`` turns the sums into the figures a reader wants:

- every kind: rows ok / with errors, predicted label counts;
- shap: mean |attribution| per raw feature (with ``top_k``, over the rows that list the feature);
- counterfactuals: counts per status and the share of rows needing recourse that got some;
- reasons: declined share and how often each feature is a reason (and the first reason);
- attention, attributions: truncated texts and the mean number of tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Acc = dict[str, Any]


def _add(acc: Acc, path: tuple[str, ...], amount: float | list[float]) -> None:
    node = acc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    last = path[-1]
    if isinstance(amount, list):
        current = node.setdefault(last, [0.0] * len(amount))
        node[last] = [a + b for a, b in zip(current, amount, strict=True)]
    else:
        node[last] = node.get(last, 0) + amount


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
    for line in lines:
        if line["status"] != "ok":
            _add(acc, ("rows", "error"), 1)
            continue
        _add(acc, ("rows", "ok"), 1)
        result = line["result"]
        label = (result.get("prediction") or {}).get("label")
        if label is not None:
            _add(acc, ("labels", str(label)), 1)
        ADDERS.get(kind, _nothing)(acc, result, feature_order)
    return acc


def _nothing(acc: Acc, result: dict[str, Any], feature_order: list[str] | None) -> None:
    return None


def _shap(acc: Acc, result: dict[str, Any], feature_order: list[str] | None) -> None:
    pairs: Iterable[tuple[str, Any]]
    if "attribution_values" in result and feature_order is not None:
        pairs = zip(feature_order, result["attribution_values"], strict=True)
    else:
        pairs = ((a["feature"], a["attribution"]) for a in result.get("attributions", []))
    features = acc.setdefault("features", {})
    for feature, value in pairs:
        pair = features.get(feature)
        if pair is None:
            features[feature] = [abs(value), 1.0]
        else:
            pair[0] += abs(value)
            pair[1] += 1.0


def _counterfactuals(acc: Acc, result: dict[str, Any], feature_order: list[str] | None) -> None:
    _add(acc, ("status", result["status"]), 1)
    for counterfactual in result.get("counterfactuals", []):
        _add(acc, ("changed",), [float(len(counterfactual["changes"])), 1.0])


def _reasons(acc: Acc, result: dict[str, Any], feature_order: list[str] | None) -> None:
    _add(acc, ("status", result["status"]), 1)
    for reason in result.get("reasons", []):
        _add(acc, ("reasons", reason["feature"]), [1.0, 1.0 if reason["rank"] == 1 else 0.0])
    if result.get("counterfactual_status") is not None:
        _add(acc, ("counterfactual_status", result["counterfactual_status"]), 1)


def _text(acc: Acc, result: dict[str, Any], feature_order: list[str] | None) -> None:
    _add(acc, ("tokens",), [float(len(result.get("tokens", []))), 1.0])
    if result.get("truncated"):
        _add(acc, ("truncated",), 1)


ADDERS = {
    "shap": _shap,
    "counterfactuals": _counterfactuals,
    "reasons": _reasons,
    "attention": _text,
    "attributions": _text,
}


def _mean(pair: list[float] | None) -> float | None:
    return pair[0] / pair[1] if pair and pair[1] else None


def finalize(kind: str, acc: Acc) -> dict[str, Any]:
    """The job's summary from its accumulator (partial while the job runs)."""
    rows = acc.get("rows", {})
    out: dict[str, Any] = {
        "rows_ok": int(rows.get("ok", 0)),
        "rows_error": int(rows.get("error", 0)),
        "label_counts": {k: int(v) for k, v in sorted(acc.get("labels", {}).items())},
    }
    if kind == "shap":
        features = acc.get("features", {})
        out["mean_abs_attribution"] = sorted(
            (
                {"feature": name, "mean_abs_attribution": _mean(pair), "rows": int(pair[1])}
                for name, pair in features.items()
            ),
            key=lambda item: (-(item["mean_abs_attribution"] or 0.0), item["feature"]),
        )
    elif kind == "counterfactuals":
        status = {k: int(v) for k, v in sorted(acc.get("status", {}).items())}
        needing = status.get("ok", 0) + status.get("no_counterfactual", 0)
        out["status_counts"] = status
        out["recourse_share"] = status.get("ok", 0) / needing if needing else None
        out["mean_changed_features"] = _mean(acc.get("changed"))
    elif kind == "reasons":
        status = {k: int(v) for k, v in sorted(acc.get("status", {}).items())}
        total = sum(status.values())
        out["status_counts"] = status
        out["declined_share"] = status.get("declined", 0) / total if total else None
        out["reason_counts"] = sorted(
            (
                {"feature": name, "count": int(pair[0]), "first_reason": int(pair[1])}
                for name, pair in acc.get("reasons", {}).items()
            ),
            key=lambda item: (-item["count"], item["feature"]),
        )
        if acc.get("counterfactual_status"):
            out["counterfactual_status_counts"] = {
                k: int(v) for k, v in sorted(acc["counterfactual_status"].items())
            }
    elif kind in ("attention", "attributions"):
        out["truncated"] = int(acc.get("truncated", 0))
        out["mean_tokens"] = _mean(acc.get("tokens"))
    return out

"""Comparison with dice-ml called directly: on the same 50 declined ``loan`` applications and the same
settings (method random, total_CFs=4, desired class "good" = index 1, features_to_vary = the manifest's
varying features, permitted_range = the manifest's min/max and categories, random_seed 0), count the
counterfactuals that break a constraint (the oracle's checker, with the manifest's monotone and step rules)
or are not "good" when re-scored by the pipeline. Both counts are recorded (``record_property`` and printed);
Candor's must be zero.

dice-ml's progress bar and its pandas deprecation warnings are silenced around the direct calls only (the
service itself must stay quiet under ``filterwarnings = error`` without help).
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from cf_oracles import (
    Served,
    Subject,
    cf_url,
    check_envelope,
    demo_model,
    native,
    ok_json,
    post,
    served_copy,
    subject_for,
    violations,
)

ROWS = 50
TOTAL_CFS = 4
SEED = 0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Served]:
    with served_copy(tmp_path_factory.mktemp("cf-vs-dice"), demo_dir) as s:
        yield s


def manifest_ranges(loan: Subject, features: list[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name in features:
        rule = loan.rules[name]
        if rule.kind == "numeric":
            low, high = float(rule.low), float(rule.high)  # type: ignore[arg-type]
            out[name] = [int(low), int(high)] if low.is_integer() and high.is_integer() else [low, high]
        else:
            out[name] = list(rule.categories)
    return out


def tally(
    loan: Subject,
    queries: list[dict[str, Any]],
    cfs_per_query: list[list[dict[str, Any]]],
    vary: list[str],
    permitted: dict[str, Any],
) -> Counter:
    counts: Counter = Counter()
    for query, cfs in zip(queries, cfs_per_query, strict=True):
        counts["rows_with_counterfactuals"] += bool(cfs)
        if not cfs:
            continue
        reached = loan.reaches(cfs, "good")
        for cf, ok in zip(cfs, reached, strict=True):
            broken = violations(query, cf, loan.rules, vary, permitted)
            counts["counterfactuals"] += 1
            counts["invalid"] += not bool(ok)
            counts["constraint_violations"] += bool(broken)
            counts["bad"] += bool(broken) or not bool(ok)
            counts.update(b.split(":")[0] for b in broken)
    return counts


@contextlib.contextmanager
def quiet_dice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No progress bar (TQDM_DISABLE is read when tqdm is imported, so patch dice-ml's handle to it), no
    dice-ml DeprecationWarning (pandas' Pandas4Warning on ``inplace=``), no stdout from its failure print."""
    from dice_ml.explainer_interfaces import explainer_base

    monkeypatch.setattr(explainer_base, "tqdm", partial(explainer_base.tqdm, disable=True))
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"dice_ml\..*")
        yield


def dice_direct(
    loan: Subject, queries: list[dict[str, Any]], vary: list[str], permitted: dict[str, Any], monkeypatch
) -> tuple[list[list[dict[str, Any]]], Counter]:
    """dice-ml the way a user calls it: Data, Model, Dice(method="random"), then generate per row."""
    import dice_ml

    manifest, _, data = demo_model("loan")
    numeric = [n for n in loan.features if loan.rules[n].kind == "numeric"]
    found: list[list[dict[str, Any]]] = []
    errors: Counter = Counter()
    with quiet_dice(monkeypatch):
        explainer = dice_ml.Dice(
            dice_ml.Data(dataframe=data, continuous_features=numeric, outcome_name=manifest["target"]),
            dice_ml.Model(model=loan.pipeline, backend="sklearn"),
            method="random",
        )
        for query in queries:
            try:
                result = explainer.generate_counterfactuals(
                    pd.DataFrame.from_records([query], columns=loan.features),
                    total_CFs=TOTAL_CFS,
                    desired_class=1,
                    features_to_vary=vary,
                    permitted_range=permitted,
                    random_seed=SEED,
                )
            except Exception as exc:  # dice-ml raises when it finds nothing; counted, not a violation
                errors[type(exc).__name__] += 1
                found.append([])
                continue
            example = result.cf_examples_list[0]
            frame = example.final_cfs_df_sparse if example.final_cfs_df_sparse is not None else None
            frame = example.final_cfs_df if frame is None else frame
            rows = [] if frame is None else frame[loan.features].to_dict("records")
            found.append([{k: native(v) for k, v in row.items()} for row in rows])
    return found, errors


def test_dice_ml_direct_versus_candor(served: Served, record_property, monkeypatch, capsys) -> None:
    loan = subject_for("loan", served.app)
    assert loan.classes == ["bad", "good"]
    queries = loan.label_rows("good", predicted=False, limit=ROWS)
    assert len(queries) == ROWS
    vary = loan.default_vary
    permitted = manifest_ranges(loan, vary)

    started = time.perf_counter()
    dice_cfs, dice_errors = dice_direct(loan, queries, vary, permitted, monkeypatch)
    dice_s = time.perf_counter() - started
    dice = tally(loan, queries, dice_cfs, vary, permitted)

    body = {
        "instances": queries,
        "total_cfs": TOTAL_CFS,
        "desired_class": "good",
        "features_to_vary": vary,
        "permitted_range": permitted,
        "method": "random",
        "seed": SEED,
        "budget_ms": 20_000,
    }
    started = time.perf_counter()
    envelope = ok_json(post(served, cf_url("loan"), body))
    candor_s = time.perf_counter() - started
    candor_cfs = [[cf["instance"] for cf in r["counterfactuals"]] for r in envelope["results"]]
    candor = tally(loan, queries, candor_cfs, vary, permitted)

    summary = {
        "dice_ml": {**dice, "errors": dict(dice_errors), "seconds": round(dice_s, 1)},
        "candor": {**candor, "dropped": envelope["quality"]["dropped"], "seconds": round(candor_s, 1)},
    }
    record_property("dice_ml_direct_bad_counterfactuals", dice["bad"])
    record_property("candor_bad_counterfactuals", candor["bad"])
    record_property("comparison", summary)
    with capsys.disabled():
        print(f"\n[cf-vs-dice] {ROWS} declined loan rows: {summary}")

    assert candor["bad"] == 0, summary
    check_envelope(loan, envelope, body)  # every other promise too, with the full checker
    assert candor["counterfactuals"] > 0, summary

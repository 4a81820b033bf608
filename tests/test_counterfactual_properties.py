"""Property tests for counterfactuals: whatever the request draws (rows, features_to_vary, permitted_range,
total_cfs, method, seed), every counterfactual Candor returns keeps every promise when checked by the
independent oracle in ``cf_oracles`` (re-scored by the fitted Pipeline, constraints recomputed from the
manifest as written and the reference data).

Models: the ``loan`` demo (declined rows, i.e. predicted "bad") and the fixture ``credit`` models registered
over HTTP (binary with a favourable class at index 0, multiclass, regression), which have monotone increasing
and decreasing features, declared and implied steps, declared bounds wider than the data, an immutable and two
protected features (one of them mutable-but-protected). One SQLite-backed app per module keeps this fast;
the backends are covered by ``test_counterfactuals.py``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cf_oracles import (
    Rule,
    Served,
    Subject,
    cf_url,
    check_envelope,
    ok_json,
    post,
    records,
    register_over_http,
    served_copy,
    subject_for,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

METHODS = ["random", "genetic", "kdtree"]
BUDGET_MS = 2000
MARGIN_S = 1.5


def hypothesis_settings(examples: int) -> settings:
    return settings(
        derandomize=True,
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Served]:
    with served_copy(tmp_path_factory.mktemp("cf-properties"), demo_dir) as s:
        for task in ("binary", "multiclass", "regression"):
            register_over_http(s, task)
        yield s


# -- strategies ------------------------------------------------------------------------------------------
@st.composite
def numeric_range(draw: st.DrawFn, rule: Rule) -> list[float]:
    """A [lo, hi] inside the manifest bounds with lo < hi; on a step grid, sometimes half a step off it."""
    low, high = float(rule.low), float(rule.high)  # type: ignore[arg-type]
    if rule.step:
        first, last = math.ceil(low / rule.step), math.floor(high / rule.step)
        a = draw(st.integers(first, last - 1))
        b = draw(st.integers(a + 1, last))
        lo, hi = a * rule.step, b * rule.step
        if draw(st.booleans()) and b - a >= 2:
            lo += rule.step / 2  # an off-grid bound: the next grid point up is the first allowed value
        if rule.step == 1.0:
            lo, hi = (int(lo), int(hi)) if float(lo).is_integer() else (lo, int(hi))
        return [lo, hi]
    a = draw(st.integers(0, 99))
    b = draw(st.integers(a + 1, 100))
    return [round(low + (high - low) * a / 100, 4), round(low + (high - low) * b / 100, 4)]


@st.composite
def cf_bodies(
    draw: st.DrawFn,
    subject: Subject,
    rows: list[dict[str, Any]],
    methods: tuple[str, ...],
    max_rows: int = 3,
) -> dict[str, Any]:
    picked = draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=max_rows, unique=True))
    body: dict[str, Any] = {
        "instances": [rows[i] for i in picked],
        "total_cfs": draw(st.integers(1, 5)),
        "seed": draw(st.integers(0, 100_000)),
        "method": draw(st.sampled_from(methods)),
        "budget_ms": BUDGET_MS,
    }
    vary = subject.default_vary
    if draw(st.booleans()):
        vary = draw(st.lists(st.sampled_from(subject.default_vary), min_size=1, unique=True))
        body["features_to_vary"] = vary
    permitted: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(vary), unique=True, max_size=3)):
        rule = subject.rules[name]
        if rule.kind == "numeric":
            permitted[name] = draw(numeric_range(rule))
        else:
            permitted[name] = draw(st.lists(st.sampled_from(rule.categories), min_size=1, unique=True))
    if permitted:
        body["permitted_range"] = permitted
    if subject.manifest["task"] == "multiclass_classification":
        body["desired_class"] = draw(st.sampled_from(subject.classes))
    elif subject.is_regression:
        centre = float(subject.predict_value(body["instances"][:1])[0])
        shift = draw(st.sampled_from([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]))
        width = draw(st.sampled_from([0.5, 1.0, 2.0]))
        body["desired_range"] = [round(centre + shift, 3), round(centre + shift + width, 3)]
    elif draw(st.booleans()):
        body["desired_class"] = subject.manifest["favourable_class"]
    return body


def run_and_check(served: Served, subject: Subject, body: dict[str, Any], seen: Counter) -> None:
    started = time.perf_counter()
    response = post(served, cf_url(subject.name), body)
    elapsed = time.perf_counter() - started
    envelope = ok_json(response)
    found = check_envelope(subject, envelope, body)
    assert elapsed <= body["budget_ms"] / 1000 + MARGIN_S, (elapsed, body)
    seen["requests"] += 1
    seen["counterfactuals"] += sum(len(f) for f in found)
    seen.update(r["status"] for r in envelope["results"])
    for result in envelope["results"]:
        if result["status"] == "no_counterfactual":
            vary = len(body.get("features_to_vary", subject.default_vary))
            seen[f"no_cf/{body['method']}/{vary}-features/{result['reason']}"] += 1


def assert_not_vacuous(seen: Counter) -> None:
    """The properties were checked on real counterfactuals, not only on empty answers (the counter also
    says why answers were empty, by method and number of features allowed to vary)."""
    assert seen["counterfactuals"] > 0 and seen["ok"] > 0, seen


# -- the properties ------------------------------------------------------------------------------------
RANDOM = ("random",)
DICE = ("genetic", "kdtree")  # dice-ml underneath: about 1 s per row for genetic, so one row per request
CASES = [
    # model, rows predicted other than this class, methods, examples, rows per request
    pytest.param("loan", "good", RANDOM, 14, 3, id="loan-random"),
    pytest.param("loan", "good", DICE, 4, 1, id="loan-genetic-kdtree"),
    pytest.param("credit-binary", "approve", RANDOM, 14, 3, id="credit-binary-random"),
    pytest.param("credit-binary", "approve", DICE, 4, 1, id="credit-binary-genetic-kdtree"),
    pytest.param("credit-multiclass", "high", METHODS, 8, 1, id="credit-multiclass"),
    pytest.param("credit-regression", None, METHODS, 8, 1, id="credit-regression"),
]


@pytest.mark.parametrize(("model", "unlike", "methods", "examples", "max_rows"), CASES)
def test_every_counterfactual_keeps_every_promise(
    served: Served, model: str, unlike: str | None, methods: tuple[str, ...], examples: int, max_rows: int
) -> None:
    subject = subject_for(model, served.app)
    if unlike is None:
        rows = records(subject.reference.head(200))
    else:
        rows = subject.label_rows(unlike, predicted=False, limit=300)
    if model == "loan":
        assert len(rows) == 231, "every declined loan application is a candidate"
    if model == "credit-binary":
        assert subject.classes.index("approve") == 0
    seen: Counter = Counter()

    @hypothesis_settings(examples)
    @given(body=cf_bodies(subject, rows, methods, max_rows))
    def check(body: dict[str, Any]) -> None:
        run_and_check(served, subject, body, seen)

    check()
    assert_not_vacuous(seen)


def test_mutable_but_protected_feature_never_varies_by_default(served: Served) -> None:
    """``gender`` is mutable by default yet protected: absent from the default features_to_vary."""
    subject = subject_for("credit-binary", served.app)
    assert subject.rules["gender"].mutable and subject.rules["gender"].protected
    assert "gender" not in subject.default_vary
    rows = subject.label_rows("approve", predicted=False, limit=8)
    body = {"instances": rows, "total_cfs": 4, "seed": 1}
    envelope = ok_json(post(served, cf_url(subject.name), body))
    found = check_envelope(subject, envelope, body)
    assert "gender" not in envelope["method"]["params"]["features_to_vary"]
    assert sum(len(f) for f in found) >= len(rows), (
        "recourse exists for these rows (tenure, debt, rate, plan)"
    )

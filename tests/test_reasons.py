"""Adverse-action reasons: the ranking, codes and texts, protected features and the addresses, each checked
against an oracle: shap.TreeExplainer on the Pipeline's final estimator over its transformed rows, one-hot
columns summed back to their raw feature (mapped from the fitted ColumnTransformer here), signed toward the
favourable class; the reason catalogue of the manifest as written; counterfactual addresses re-scored and
re-checked by ``cf_oracles``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cf_oracles import (
    CREDIT_REASONS,
    Served,
    Subject,
    assert_problem,
    cf_url,
    check_prediction,
    diff,
    ok_json,
    post,
    reasons_url,
    records,
    register_over_http,
    served_copy,
    shap_toward,
    subject_for,
    violations,
)

TOL = 1e-6


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Served]:
    with served_copy(tmp_path_factory.mktemp("reasons"), demo_dir) as s:
        for task in ("binary", "multiclass", "regression"):
            register_over_http(s, task)
        yield s


@pytest.fixture(scope="module")
def loan(served: Served) -> Subject:
    return subject_for("loan", served.app)


@pytest.fixture(scope="module")
def credit(served: Served) -> Subject:
    return subject_for("credit-binary", served.app)


def expected_ranking(
    subject: Subject, row: dict[str, Any], attributions: dict[str, float], max_reasons: int
) -> tuple[list[tuple[str, float]], list[tuple[str, float, int]]]:
    """(reasons, protected_excluded): negative attributions toward the favourable class, most negative
    first; protected features skipped, and listed with their rank when within the first max_reasons."""
    negative = sorted(((f, a) for f, a in attributions.items() if a < 0), key=lambda item: item[1])
    reasons = [(f, a) for f, a in negative if not subject.rules[f].protected][:max_reasons]
    excluded = [
        (f, a, rank)
        for rank, (f, a) in enumerate(negative, start=1)
        if subject.rules[f].protected and rank <= max_reasons
    ]
    return reasons, excluded


def check_reasons(
    subject: Subject,
    envelope: dict[str, Any],
    rows: list[dict[str, Any]],
    max_reasons: int,
    with_counterfactual: bool = False,
) -> dict[str, int]:
    favourable = subject.manifest["favourable_class"]
    catalogue = subject.manifest.get("reasons", {})
    assert envelope["kind"] == "reasons"
    assert envelope["method"]["name"] == "reasons"
    assert envelope["method"]["algorithm"] == "tree"
    assert envelope["output"] == {"space": "log_odds", "target": favourable}
    assert len(envelope["results"]) == len(rows)
    oracle = shap_toward(subject, rows, favourable)
    declined = ~subject.reaches(rows, favourable)
    seen = {"declined": 0, "reasons": 0, "protected_excluded": 0, "addresses": 0}
    for result, row, attributions, is_declined in zip(
        envelope["results"], rows, oracle, declined, strict=True
    ):
        check_prediction(subject, result["prediction"], row)
        if not is_declined:
            assert result["status"] == "not_declined", result
            assert result["reasons"] == []
            continue
        seen["declined"] += 1
        assert result["status"] == "declined", result
        reasons = result["reasons"]
        expected, excluded = expected_ranking(subject, row, attributions, max_reasons)
        assert [r["feature"] for r in reasons] == [f for f, _ in expected], (reasons, expected)
        assert [r["rank"] for r in reasons] == list(range(1, len(reasons) + 1))
        assert len(reasons) <= max_reasons
        got = [r["attribution"] for r in reasons]
        assert got == sorted(got) and all(a < 0 for a in got), got
        for reason, (feature, attribution) in zip(reasons, expected, strict=True):
            assert reason["attribution"] == pytest.approx(attribution, abs=TOL), (feature, reason)
            assert not subject.rules[feature].protected
            assert reason["value"] == row[feature]
            entry = catalogue.get(feature)
            if entry is None:
                assert reason["code"] is None, reason
            else:
                assert (reason["code"], reason["text"]) == (entry["code"], entry["text"]), reason
            if not with_counterfactual:
                assert reason["address"] is None
        got_excluded = [
            (e["feature"], e["attribution"], e["would_rank"]) for e in result["protected_excluded"]
        ]
        assert [(f, k) for f, _, k in got_excluded] == [(f, k) for f, _, k in excluded], (
            got_excluded,
            excluded,
        )
        for (_, a, _), (_, b, _) in zip(got_excluded, excluded, strict=True):
            assert a == pytest.approx(b, abs=TOL)
        seen["reasons"] += len(reasons)
        seen["protected_excluded"] += len(excluded)
        if with_counterfactual:
            seen["addresses"] += check_addresses(subject, result, row)
        else:
            assert result["counterfactual_status"] is None
    return seen


def check_addresses(subject: Subject, result: dict[str, Any], row: dict[str, Any]) -> int:
    """Each address is a counterfactual that changes its reason's feature, reaches the favourable class
    when re-scored and keeps every constraint of the default request; returns how many there were."""
    status = result["counterfactual_status"]
    assert status in ("ok", "no_counterfactual"), result
    count = 0
    for reason in result["reasons"]:
        address = reason["address"]
        if address is None:
            continue
        assert status == "ok", result
        count += 1
        cf = address["counterfactual"]
        feature = reason["feature"]
        assert subject.rules[feature].varies, (feature, "an address changes a feature that cannot vary")
        changed = diff(row, cf, subject.rules)
        assert feature in changed, (feature, changed)
        got = {c["feature"]: (c["from"], c["to"]) for c in address["changes"]}
        assert set(got) == set(changed), (address["changes"], changed)
        assert violations(row, cf, subject.rules, subject.default_vary, {}) == []
        assert bool(subject.reaches([cf], subject.manifest["favourable_class"])[0]), cf
    return count


# -- loan -----------------------------------------------------------------------------------------------
def test_loan_reasons_equal_the_shap_oracle(served: Served, loan: Subject) -> None:
    rows = loan.label_rows("good", predicted=False, limit=25)
    envelope = ok_json(post(served, reasons_url("loan"), {"instances": rows}))
    seen = check_reasons(loan, envelope, rows, max_reasons=4)
    assert seen["declined"] == 25 and seen["reasons"] > 0, seen
    assert envelope["method"]["params"]["max_reasons"] == 4


def test_loan_catalogue_is_complete_and_stored(served: Served, loan: Subject) -> None:
    """The demo declares a reason for every feature that may be one (protected features never are), and the
    stored manifest carries the same catalogue."""
    catalogue = loan.manifest["reasons"]
    protected = {"age_in_years", "personal_status_and_sex", "foreign_worker"}
    assert set(catalogue) == set(loan.features) - protected
    assert all(entry["code"] and entry["text"] for entry in catalogue.values())
    stored = ok_json(served.client.get("/v1/models/loan/versions/1", headers=served.auth))["manifest"]
    assert stored["reasons"] == catalogue


@pytest.mark.parametrize("max_reasons", [1, 2, 7, 20])
def test_loan_max_reasons(served: Served, loan: Subject, max_reasons: int) -> None:
    rows = loan.label_rows("good", predicted=False, limit=60)[-8:]
    body = {"instances": rows, "max_reasons": max_reasons}
    check_reasons(loan, ok_json(post(served, reasons_url("loan"), body)), rows, max_reasons)


def test_loan_protected_features_are_flagged_not_given(served: Served, loan: Subject) -> None:
    """Over all declined rows, protected features rank among the first four somewhere (so the flag is
    exercised), and are never given as reasons."""
    rows = loan.label_rows("good", predicted=False, limit=231)[:50]
    envelope = ok_json(post(served, reasons_url("loan"), {"instances": rows}))
    seen = check_reasons(loan, envelope, rows, max_reasons=4)
    assert seen["protected_excluded"] > 0, seen


def test_loan_not_declined_rows_get_no_reasons(served: Served, loan: Subject) -> None:
    approved = loan.label_rows("good", predicted=True, limit=4)
    declined = loan.label_rows("good", predicted=False, limit=2)
    rows = approved[:2] + declined + approved[2:]
    envelope = ok_json(post(served, reasons_url("loan"), {"instances": rows}))
    check_reasons(loan, envelope, rows, max_reasons=4)
    assert [r["status"] for r in envelope["results"]] == ["not_declined"] * 2 + ["declined"] * 2 + [
        "not_declined"
    ] * 2


def test_loan_reasons_with_counterfactual_addresses(served: Served, loan: Subject) -> None:
    rows = loan.label_rows("good", predicted=False, limit=8)
    body = {"instances": rows, "with_counterfactual": True, "seed": 0, "budget_ms": 10_000}
    envelope = ok_json(post(served, reasons_url("loan"), body))
    seen = check_reasons(loan, envelope, rows, max_reasons=4, with_counterfactual=True)
    assert seen["addresses"] > 0, seen
    again = ok_json(post(served, reasons_url("loan"), body))
    assert again["results"] == envelope["results"], "same seed, same reasons and addresses"

    # The address is "the returned counterfactual that changes that feature with the fewest changes":
    # the counterfactuals endpoint with the same rows (all declined), seed and budget returns that set.
    cf_body = {"instances": rows, "seed": 0, "budget_ms": 10_000}
    returned = ok_json(post(served, cf_url("loan"), cf_body))["results"]
    for result, cf_result in zip(envelope["results"], returned, strict=True):
        assert result["counterfactual_status"] == cf_result["status"]
        for reason in result["reasons"]:
            touching = [
                cf
                for cf in cf_result["counterfactuals"]
                if any(c["feature"] == reason["feature"] for c in cf["changes"])
            ]
            if not touching:
                assert reason["address"] is None, reason
                continue
            fewest = min(len(cf["changes"]) for cf in touching)
            address = reason["address"]
            assert address is not None, (reason, touching)
            assert len(address["changes"]) == fewest, (address, fewest)
            assert address["counterfactual"] in [cf["instance"] for cf in touching], address


# -- the fixture model (favourable class at index 0, a partial catalogue) -----------------------------------
def test_fixture_reasons_equal_the_shap_oracle(served: Served, credit: Subject) -> None:
    assert credit.classes.index("approve") == 0
    rows = credit.label_rows("approve", predicted=False, limit=30) + credit.label_rows(
        "approve", predicted=True, limit=3
    )
    body = {"instances": rows, "max_reasons": 5, "with_counterfactual": True, "seed": 4}
    envelope = ok_json(post(served, reasons_url("credit-binary"), body))
    seen = check_reasons(credit, envelope, rows, max_reasons=5, with_counterfactual=True)
    assert seen["declined"] == 30 and seen["addresses"] > 0, seen
    given = {r["feature"] for result in envelope["results"] for r in result["reasons"]}
    assert given.isdisjoint({"gender", "age"})
    assert given - set(CREDIT_REASONS), "some reasons come from features without a catalogue entry"


def test_fixture_protected_excluded(served: Served, credit: Subject) -> None:
    rows = credit.label_rows("approve", predicted=False, limit=200)
    envelope = ok_json(post(served, reasons_url("credit-binary"), {"instances": rows[:50], "max_reasons": 8}))
    seen = check_reasons(credit, envelope, rows[:50], max_reasons=8)
    assert seen["protected_excluded"] > 0, seen


# -- refused ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["credit-regression", "credit-multiclass"])
def test_reasons_need_a_binary_classifier(served: Served, model: str) -> None:
    row = records(subject_for(model, served.app).reference.head(1))[0]
    body = assert_problem(post(served, reasons_url(model), {"instances": [row]}), 422)
    assert body.get("errors") or body.get("detail"), body


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_reasons": 0}, "max_reasons"),
        ({"max_reasons": 21}, "max_reasons"),
        ({"budget_ms": 10_000_000}, "budget_ms"),
        ({"with_counterfactual": "yes please"}, "with_counterfactual"),
        ({"colour": 1}, "colour"),
    ],
)
def test_reasons_options_422(served: Served, loan: Subject, options: dict[str, Any], field: str) -> None:
    row = loan.label_rows("good", predicted=False, limit=1)[0]
    assert_problem(post(served, reasons_url("loan"), {"instances": [row], **options}), 422, field)
    assert_problem(post(served, reasons_url("loan"), {"instances": []}), 422, "instances")
    detail = ok_json(served.client.get("/v1/models/loan", headers=served.auth))
    assert [v["version"] for v in detail["versions"]] == [1]
